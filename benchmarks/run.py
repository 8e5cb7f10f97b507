"""The speed suite: KonCept512 at 384x512, JAX vs PyTorch, one command, a table and a JSON file.

    python benchmarks/run.py                 # the full suite (meant for a GPU; hours on a 2-core CPU)
    python benchmarks/run.py --quick         # reduced sizes and iterations, a few minutes on a CPU
    python benchmarks/run.py --quick --json benchmarks/results-cpu.json

Sections (``--only`` picks some):

* ``grad`` - (a) one forward pass + gradient of the summed scores with respect to the input pixels, the
  step every attack iteration makes, by batch size: JAX (one ``jax.jit``), PyTorch eager and, where it
  works, ``torch.compile``. Also the FLOPs of the compiled JAX program (``compiled.cost_analysis()``) and,
  on a known GPU, the fraction of its peak FLOP rate reached (:data:`PEAK_TFLOPS`).
* ``attack`` - (b) the paper's attack: L2 PGD inside a per-image bisection over the budget, then the
  DCT-domain quantizer (JPEG QF 90, IFAST, 4:4:4) - images per second. The PyTorch reference runs the
  same PGD + bisection (``benchmarks/attack_pgd.py:torch_search``, early stop off on both sides so both
  make exactly ``batch * tries * steps`` gradient evaluations); there is no PyTorch DCT quantizer, so the
  ratio compares PGD + bisection, and the quantizer's JAX time is reported next to it.
* ``options`` - the speed options of :mod:`qcamo_jax.precision` (fp32, tf32, bf16, remat, donate): speed
  of the gradient pass, and the success rate and L2 distortion of the attack run with each option,
  success judged by the float32 model on the returned images.

(c) memory per image: XLA's buffer assignment of each compiled program (``memory_analysis()``:
arguments + outputs + temporaries, the device memory the program needs) and, on a GPU, the allocator's
peak (``memory_stats()['peak_bytes_in_use']``). (d) compile times are reported apart and never included
in a rate. Every timed JAX call ends in ``block_until_ready``; times are medians of ``--repeats`` runs
after one warm-up run.

The model is the MediaEval KonCept512 (the PyTorch port) with random weights, batch norms calibrated on
real photos so scores look like MOS (``benchmarks/attack_pgd.py:build_models``), converted to Flax with
the project's converter: both frameworks run the same network with the same weights. JSON keys ``grad``
and ``attack`` each hold ``jax_s``, ``torch_s`` and ``ratio = jax_s / torch_s`` (below 1: JAX faster),
and ``device`` names the machine. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
import traceback
from typing import Any, Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

#: Dense peak rates (TFLOP/s) by GPU and arithmetic, from NVIDIA's data sheets (no sparsity). Used only
#: when a GPU is present, to express the gradient pass as a fraction of peak.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100 SXM": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0},
    "H100 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.0},
    "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},  # H200 SXM: H100 SXM compute, more/faster memory
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
    "L4": {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0},
}

#: ``--quick`` reductions (printed in the report and stored in the JSON).
QUICK = {"batches": [1, 2], "attack_batch": 1, "steps": 2, "tries": 2, "repeats": 2, "option_batch": 4,
         "options_model": "tiny", "options_images": 4}
FULL = {"batches": [1, 4, 8, 16, 32], "attack_batch": 8, "steps": 10, "tries": 7, "repeats": 5, "option_batch": 16,
        "options_model": "full", "options_images": 32}


# --------------------------------------------------------------------------------------------------
# Measuring helpers.


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` (which must block until its result is ready) after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), runs


def compile_timed(jitted, *args, **kwargs):
    """``(compiled, seconds)``: tracing, lowering and XLA compilation of ``jitted`` for these arguments.

    ``compiled.hlo_flops`` is the FLOP count of the same trace as lowered for the CPU, before any
    backend rewrites it (see :func:`hlo_flops`); it is counted after the timing.
    """
    t0 = time.perf_counter()
    traced = jitted.trace(*args, **kwargs)
    compiled = traced.lower().compile()
    seconds = time.perf_counter() - t0
    compiled.hlo_flops = hlo_flops(traced)
    return compiled, seconds


def _flops(cost) -> float | None:
    """The ``"flops"`` entry of an XLA cost analysis (a dict, or a list of one dict on some versions)."""
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def hlo_flops(traced) -> float | None:
    """FLOPs of a traced program (``jax.jit(f).trace(...)``): XLA's HLO cost analysis of it lowered for the CPU.

    Counted on the HLO before any backend rewrites it, so the count is the same whatever the device:
    the compiled program's own cost analysis misses the convolutions on a GPU (they become cuDNN custom
    calls: 0.74 GFLOP for a batch-1 KonCept512 gradient on an H200, against 117 GFLOP here), and the
    GPU-lowered program returned no cost analysis at all (jax 0.11.2). Rates must use this count.
    """
    try:
        return _flops(traced.lower(lowering_platforms=("cpu",)).cost_analysis())
    except Exception:
        return None


def xla_memory(compiled) -> dict[str, int] | None:
    """Device memory a compiled program needs, from XLA's buffer assignment (bytes)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # some backends do not implement it
        return None
    if m is None:
        return None
    out = {k: int(getattr(m, f"{k}_size_in_bytes", 0)) for k in ("argument", "output", "temp", "generated_code", "alias")}
    out["total"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


def xla_flops(compiled) -> float | None:
    """FLOPs from the *compiled* program's cost analysis (misses cuDNN convolutions on a GPU; see :func:`hlo_flops`)."""
    try:
        return _flops(compiled.cost_analysis())
    except Exception:
        return None


def device_peak_bytes() -> int | None:
    """Allocator peak of the first device (GPU/TPU; None on CPU, where JAX keeps no such statistics)."""
    import jax

    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        return None
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def gpu_peak(device_kind: str) -> dict[str, float] | None:
    """Peak TFLOP/s of a known GPU from its ``device_kind`` (e.g. ``"NVIDIA H100 80GB HBM3"``)."""
    kind = device_kind.upper()
    if "H200" in kind:
        return PEAK_TFLOPS["H200"]
    if "H100" in kind:
        if "PCIE" in kind:
            return PEAK_TFLOPS["H100 PCIe"]
        if "NVL" in kind:
            return PEAK_TFLOPS["H100 NVL"]
        return PEAK_TFLOPS["H100 SXM"]  # "NVIDIA H100 80GB HBM3" is the SXM part
    for name in ("A100", "L4"):
        if name in kind:
            return PEAK_TFLOPS[name]
    return None


def peak_arithmetic(opts) -> str:
    """Which peak of :data:`PEAK_TFLOPS` a :class:`qcamo_jax.precision.SpeedOptions` runs against:
    ``"bf16"``, ``"tf32"`` (also the GPU default for float32 convolutions) or ``"fp32"``."""
    if opts.dtype == "bfloat16":
        return "bf16"
    return {"tf32": "tf32", "bf16": "bf16", "default": "tf32"}.get(opts.matmul, "fp32")


def device_info() -> dict[str, Any]:
    import jax

    dev = jax.devices()[0]
    info = {"backend": jax.default_backend(), "device_kind": dev.device_kind, "device_count": jax.device_count(),
            "jax": jax.__version__, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "loadavg_start": [round(v, 2) for v in os.getloadavg()]}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        info["cpu"] = platform.processor()
    info["name"] = dev.device_kind if info["backend"] != "cpu" else f"CPU {info['cpu']} ({os.cpu_count()} cores)"
    return info


def torch_setup(threads: int | None, use_cuda: bool):
    """Import torch, pick its device, and make float32 mean float32 (no TF32) like JAX's reference."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    device = "cuda" if use_cuda and torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False  # PyTorch's default is TF32 for convolutions
        torch.backends.cuda.matmul.allow_tf32 = False
    return torch, device


@contextlib.contextmanager
def _host_numpy(torch):
    """Let ``Tensor.numpy()`` accept device tensors (copy to the host first) while active."""
    original = torch.Tensor.numpy
    torch.Tensor.numpy = lambda self, *a, **k: original(self.detach().cpu(), *a, **k)
    try:
        yield
    finally:
        torch.Tensor.numpy = original


def _sync(torch, device):
    if device == "cuda":
        torch.cuda.synchronize()


def torch_grad_step(model, torch_device: str) -> Callable[[np.ndarray], Any]:
    """``step(x float32 [B, H, W, 3] pixels) -> d(sum of scores)/dx``, synchronised: PyTorch's (a)."""
    import torch

    def step(x):
        xt = torch.as_tensor(x, device=torch_device).requires_grad_(True)
        (g,) = torch.autograd.grad(model(xt.permute(0, 3, 1, 2) / 127.5 - 1.0).sum(), xt)
        _sync(torch, torch_device)
        return g

    return step


class Budget:
    """A wall-clock deadline for the whole run, so a device lease is never overrun.

    Each unit of work (one batch size, one option, one section) asks :meth:`allows` with an estimate
    before it starts; estimates come from what was measured so far (:meth:`observe`). A skipped unit
    is reported as skipped, never silently dropped.
    """

    def __init__(self, seconds: float | None, first_compile_guess_s: float = 60.0):
        self.deadline = None if seconds is None else time.perf_counter() + seconds
        self.compile_s = first_compile_guess_s
        self.per_image_by_batch: dict[int, float] = {}

    def left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.perf_counter()

    def allows(self, estimate_s: float) -> bool:
        return estimate_s <= self.left()

    def estimate(self, images: int, runs: int, compiles: int = 1, batch: int | None = None) -> float:
        """Seconds for ``compiles`` compilations plus ``runs`` passes over ``images`` images in batches of ``batch``.

        The per-image gradient time is the one measured at the nearest batch size (0.05 s before any).
        """
        per_image = 0.05
        if self.per_image_by_batch:
            near = min(self.per_image_by_batch, key=lambda b: abs(b - (batch or images)))
            per_image = self.per_image_by_batch[near]
        return compiles * self.compile_s + runs * images * per_image

    def observe(self, compile_s: float, images: int, run_s: float) -> None:
        """Record one measured compilation and one gradient pass over a batch of ``images``."""
        self.compile_s = max(compile_s, 0.5 * self.compile_s)
        self.per_image_by_batch[images] = run_s / max(images, 1)


# --------------------------------------------------------------------------------------------------
# (a) forward + input gradient.


def bench_grad(tmodel, jmodel, batches, repeats, size, torch_device: str | None, log, budget: "Budget") -> dict:
    import jax
    import jax.numpy as jnp

    from qcamo_jax import precision

    opts = precision.SpeedOptions()  # float32, full precision: the reference both sides compute
    score = precision.wrap(jmodel.apply, opts)
    grad_fn = jax.jit(jax.value_and_grad(lambda v, x: score(v, x).sum(), argnums=1))
    tstep = torch_grad_step(tmodel, torch_device) if torch_device is not None else None
    rows, skipped = [], []
    rng = np.random.default_rng(0)
    h, w = size
    peak = gpu_peak(jax.devices()[0].device_kind) if jax.default_backend() == "gpu" else None
    for b in batches:
        if not budget.allows(budget.estimate(images=b, runs=2 * (repeats + 1))):
            skipped.append(b)
            log(f"  grad batch {b}: skipped ({budget.left():.0f}s left of the deadline)")
            continue
        x = rng.uniform(0, 255, (b, h, w, 3)).astype(np.float32)
        xj = jax.device_put(jnp.asarray(x))
        compiled, compile_s = compile_timed(grad_fn, jmodel.variables, xj)
        jax_s, jax_runs = median_time(lambda: jax.block_until_ready(compiled(jmodel.variables, xj)), repeats)
        flops = compiled.hlo_flops
        row = {"batch": b, "jax_s": jax_s, "jax_runs_s": jax_runs, "jax_compile_s": compile_s,
               "jax_images_per_s": b / jax_s, "flops": flops, "flops_compiled_cost_analysis": xla_flops(compiled),
               "jax_tflops_per_s": flops / jax_s / 1e12 if flops else None,
               "jax_memory": xla_memory(compiled), "device_peak_bytes": device_peak_bytes()}
        if row["jax_memory"]:
            row["jax_memory_per_image_mib"] = row["jax_memory"]["total"] / b / 2**20
        if peak and flops:
            row["fraction_of_peak_fp32"] = flops / jax_s / 1e12 / peak["fp32"]
        if tstep is not None:
            xt = x
            row["torch_s"], row["torch_runs_s"] = median_time(lambda: tstep(xt), repeats)
            row["ratio"] = row["jax_s"] / row["torch_s"]
            if torch_device == "cuda":
                import torch

                torch.cuda.reset_peak_memory_stats()
                tstep(xt)
                row["torch_peak_bytes"] = int(torch.cuda.max_memory_allocated())
        budget.observe(compile_s, images=b, run_s=jax_s)
        log(f"  grad batch {b}: jax {jax_s:.3f}s (compile {compile_s:.1f}s), torch {row.get('torch_s', float('nan')):.3f}s")
        rows.append(row)
    if not rows:
        return {"unavailable": f"deadline: no batch size fitted in the time left ({budget.left():.0f}s)"}
    rows.sort(key=lambda r: r["batch"])
    best = max(rows, key=lambda r: r["jax_images_per_s"])
    out = {"what": "forward + d(sum of scores)/d(pixels), one batch; jax_s/torch_s at the largest batch measured",
           "size": [h, w], "by_batch": rows, "best_batch_jax": best["batch"]}
    if skipped:
        out["skipped_batches_deadline"] = skipped
    last = rows[-1]
    out.update(batch=last["batch"], jax_s=last["jax_s"], torch_s=last.get("torch_s"), ratio=last.get("ratio"),
               jax_compile_s=last["jax_compile_s"])
    if peak:
        out["gpu_peak_tflops"] = peak
        out["best_fraction_of_peak_fp32"] = best.get("fraction_of_peak_fp32")
    return out


# --------------------------------------------------------------------------------------------------
# (b) the full attack.


def bench_attack(tmodel, jmodel, images, targets, steps, tries, repeats, torch_device, log, precision_spec: str = "fp32") -> dict:
    """(b): the paper's attack, JAX (one jitted program) against the PyTorch eager mirror.

    Both sides run the same algorithm (``attack_pgd.torch_search``: constant steps, every try from the
    original, no refinement, early stop off) on the same weights, so both make ``batch * tries * steps``
    gradient evaluations. ``precision_spec`` (``fp32`` or ``tf32``) sets the convolution arithmetic of
    both sides alike.
    """
    import jax
    import jax.numpy as jnp

    from attack_pgd import torch_search
    from qcamo_jax import attacks, precision
    from qcamo_jax.quantize.dct import DCTConfig, quantize_dct

    opts = precision.SpeedOptions.parse(precision_spec)
    if opts.dtype != "float32":
        raise ValueError("the attack comparison runs in float32 (fp32 or tf32)")
    b = images.shape[0]
    cfg = attacks.SearchConfig(pgd=attacks.PGDConfig(steps=steps, early_stop=False, schedule="constant"), eps_max=2000.0,
                               bisection_steps=tries, refine_steps=0, warm_start=False)
    score_one = precision.wrap(jmodel.score_one, opts)
    attack = jax.jit(attacks.attack_fn(score_one, "search", cfg))
    dct_cfg = DCTConfig(quality=90, dct_method="ifast", subsampling="444")
    quant = jax.jit(lambda v, o, a, t: quantize_dct(score_one, v, o, a, t, dct_cfg))
    xj, tj = jnp.asarray(images, jnp.float32), jnp.asarray(targets)
    orig = jnp.asarray(images, jnp.uint8)
    attack_c, attack_compile = compile_timed(attack, jmodel.variables, xj, tj, None)
    adv, res = jax.block_until_ready(attack_c(jmodel.variables, xj, tj, None))
    quant_c, quant_compile = compile_timed(quant, jmodel.variables, orig, adv, tj)
    log(f"  attack ({opts.describe()}) compiled: {attack_compile:.1f}s, quantizer {quant_compile:.1f}s")
    jax_s, jax_runs = median_time(lambda: jax.block_until_ready(attack_c(jmodel.variables, xj, tj, None)), repeats, warmup=0)
    quant_s, _ = median_time(lambda: jax.block_until_ready(quant_c(jmodel.variables, orig, adv, tj)), repeats)
    _, _, qres = quant_c(jmodel.variables, orig, adv, tj)
    out = {"what": "L2 PGD + per-image budget bisection (early stop off), then the DCT quantizer (JAX only)",
           "precision": opts.describe(), "batch": b, "size": list(images.shape[1:3]), "steps": steps, "tries": tries,
           "eps_max": 2000.0, "grad_evals": int(np.asarray(res.iterations).sum()), "jax_s": jax_s, "jax_runs_s": jax_runs,
           "jax_compile_s": attack_compile, "jax_quantize_s": quant_s, "jax_quantize_compile_s": quant_compile,
           "jax_total_s": jax_s + quant_s, "jax_images_per_s": b / (jax_s + quant_s),
           "jax_memory": xla_memory(attack_c), "jax_quantize_memory": xla_memory(quant_c),
           "device_peak_bytes": device_peak_bytes(),
           "success_attack_jax": np.asarray(res.success).tolist(),
           "success_after_dct_quantizer_jax": np.asarray(qres.success).tolist(),
           "l2_attack_jax": np.round(np.asarray(res.l2), 2).tolist(), "l2_quantized_jax": np.round(np.asarray(qres.l2), 2).tolist()}
    if out["jax_memory"]:
        out["jax_memory_per_image_mib"] = out["jax_memory"]["total"] / b / 2**20
    if torch_device is not None:
        import torch

        # torch_search builds its tensors with torch.as_tensor (placed by the device context on a GPU)
        # and returns .numpy(), which needs host tensors: _host_numpy copies them back (and syncs).
        try:
            with torch_precision(torch, opts.matmul), \
                    (torch.device(torch_device) if torch_device != "cpu" else contextlib.nullcontext()), _host_numpy(torch):
                if torch_device != "cpu":  # cuDNN autotuning of these shapes happens here, not in the timed run
                    torch_search(tmodel, images[:b].astype(np.float32), targets, 2000.0, 1, 1)
                    _sync(torch, torch_device)
                runs = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    adv_t, budget_t, success_t, grads_t = torch_search(tmodel, images.astype(np.float32), targets, 2000.0,
                                                                       tries, steps)
                    _sync(torch, torch_device)
                    runs.append(time.perf_counter() - t0)
            out["torch_s"], out["torch_runs_s"] = statistics.median(runs), runs
            out["torch_grad_evals"] = int(grads_t)
            out["ratio"] = jax_s / out["torch_s"]
            out["torch_images_per_s"] = b / out["torch_s"]
            out["success_attack_torch"] = np.asarray(success_t).tolist()
            out["adv_max_abs_diff_jax_torch"] = float(np.max(np.abs(np.asarray(adv) - adv_t)))
        except Exception as exc:
            out["torch_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    log(f"  attack: jax {jax_s:.2f}s + quantizer {quant_s:.2f}s, torch {out.get('torch_s', float('nan')):.2f}s")
    return out


@contextlib.contextmanager
def torch_precision(torch, matmul: str):
    """PyTorch's convolution/matmul arithmetic to match a :class:`qcamo_jax.precision.SpeedOptions` ``matmul``."""
    tf32 = matmul in ("tf32", "default")
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# --------------------------------------------------------------------------------------------------
# torch.compile: the compiled PyTorch reference for (a), where inductor works.


def bench_torch_compile(tmodel, batch, repeats, size, torch_device, log) -> dict:
    import torch

    h, w = size
    x = np.random.default_rng(0).uniform(0, 255, (batch, h, w, 3)).astype(np.float32)
    eager = torch_grad_step(tmodel, torch_device)
    compiled = torch_grad_step(torch.compile(tmodel), torch_device)
    t0 = time.perf_counter()
    compiled(x)
    first = time.perf_counter() - t0
    compiled_s, runs = median_time(lambda: compiled(x), repeats)
    eager_s, _ = median_time(lambda: eager(x), repeats)
    log(f"  torch.compile batch {batch}: {compiled_s:.3f}s (first call {first:.1f}s), eager {eager_s:.3f}s")
    return {"what": "forward + input gradient with torch.compile (inductor), same step as (a)", "batch": batch,
            "torch_compiled_s": compiled_s, "torch_compiled_runs_s": runs, "torch_compile_first_call_s": first,
            "torch_eager_s": eager_s}


# --------------------------------------------------------------------------------------------------
# Speed options: speed, success rate and distortion.


def bench_options(jmodel, images, targets, specs, batch, steps, tries, repeats, log, budget: Budget,
                  margin: float = 0.0) -> dict:
    """Speed options: gradient pass speed at ``batch``; the attack's success (below ``targets`` as judged by
    the float32 model at full precision) and L2, attacking with a safety ``margin`` (score units)."""
    import jax
    import jax.numpy as jnp

    from qcamo_jax import attacks, precision

    cfg = attacks.SearchConfig(pgd=attacks.PGDConfig(steps=steps, margin=margin), eps_max=2000.0, bisection_steps=tries)
    # The judge is the float32 model at full precision: a plain jit would use the backend's default,
    # which is TF32 for float32 convolutions on recent NVIDIA GPUs.
    ref_score = jax.jit(precision.wrap(jmodel.apply, precision.SpeedOptions()))
    # The gradient timing batch may exceed the attacked images: tile them.
    xb = jnp.asarray(np.resize(images, (batch,) + images.shape[1:]), jnp.float32)
    # Attack timing: one warm-up, then timed runs (fewer on an accelerator, where they vary little).
    attack_runs = max(1, repeats - 1) if jax.default_backend() == "cpu" else 2
    rows, skipped = [], []
    peak = gpu_peak(jax.devices()[0].device_kind) if jax.default_backend() == "gpu" else None
    n = int(images.shape[0])
    for spec in specs:
        opts = precision.SpeedOptions.parse(spec)
        # Two compilations (gradient, attack); gradient timing, then about tries * steps gradients per image.
        if not budget.allows(budget.estimate(images=batch * (repeats + 1) + n * tries * steps * attack_runs, runs=1,
                                             compiles=2, batch=batch)):
            skipped.append(opts.describe())
            log(f"  option {opts.describe()}: skipped ({budget.left():.0f}s left of the deadline)")
            continue
        variables = precision.prepare_variables(jmodel.variables, opts)
        score_b = precision.wrap(jmodel.apply, opts)
        grad_fn = jax.jit(jax.value_and_grad(lambda v, x: score_b(v, x).sum(), argnums=1))
        gc, gcomp = compile_timed(grad_fn, variables, xb)
        g_s, _ = median_time(lambda: jax.block_until_ready(gc(variables, xb)), repeats)
        run = jax.jit(attacks.attack_fn(precision.wrap(jmodel.score_one, opts), "search", cfg),
                      donate_argnums=precision.donate_argnums(opts, (1,)))
        xa = jnp.asarray(images, jnp.float32)
        ac, acomp = compile_timed(run, variables, xa, jnp.asarray(targets), None)

        def attack_once():
            x = jnp.array(images, jnp.float32)  # a fresh buffer: donation may consume it
            return jax.block_until_ready(ac(variables, x, jnp.asarray(targets), None))

        a_s, _ = median_time(attack_once, attack_runs)
        adv, res = attack_once()
        true = np.asarray(ref_score(jmodel.variables, adv))  # judged by the float32 model
        success = true < targets
        l2 = np.sqrt(np.sum((np.asarray(adv) - images) ** 2, axis=(1, 2, 3)))
        flops = gc.hlo_flops
        row = {"option": opts.describe(), "grad_s": g_s, "grad_compile_s": gcomp, "grad_batch": batch,
               "grad_memory": xla_memory(gc), "attack_s": a_s, "attack_compile_s": acomp, "attack_memory": xla_memory(ac),
               "success_rate": float(success.mean()), "success_as_seen_by_attack": float(np.asarray(res.success).mean()),
               "mean_l2_success": float(l2[success].mean()) if success.any() else None, "mean_l2": float(l2.mean()),
               "flops": flops}
        if peak and flops:
            key = peak_arithmetic(opts)
            row["fraction_of_peak"] = flops / g_s / 1e12 / peak[key]
            row["peak_used"] = key
        budget.observe(max(gcomp, acomp), images=batch, run_s=g_s)
        log(f"  option {row['option']}: grad {g_s:.3f}s, attack {a_s:.2f}s, success {row['success_rate']:.2f}, L2 {row['mean_l2']:.1f}")
        rows.append(row)
    if not rows:
        return {"unavailable": f"deadline: no option fitted in the time left ({budget.left():.0f}s)", "skipped": skipped}
    base = rows[0]
    for r in rows:
        r["grad_speedup_vs_first"] = base["grad_s"] / r["grad_s"]
        r["success_points_vs_first"] = 100.0 * (r["success_rate"] - base["success_rate"])
    return {"what": "speed options (qcamo_jax.precision): gradient pass speed; attack success judged by the float32 model",
            "images": n, "size": list(images.shape[1:3]), "steps": steps, "tries": tries, "margin": margin, "rows": rows,
            "skipped_deadline": skipped}


# --------------------------------------------------------------------------------------------------
# Report.


def _fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def table(report: dict) -> str:
    lines = [f"device: {report['device']['name']} (jax backend {report['device']['backend']})"]
    if report.get("reductions"):
        lines.append(f"--quick reductions: {json.dumps(report['reductions'])}")
    g = report.get("grad")
    if isinstance(g, dict) and "by_batch" in g:
        lines += ["", f"(a) forward + input gradient, {g['size'][0]}x{g['size'][1]}",
                  "batch  jax_s    torch_s  ratio  jax_img/s  jax_compile_s  MiB/img  TFLOP/s"]
        for r in g["by_batch"]:
            lines.append(f"{r['batch']:>5}  {_fmt(r['jax_s'])}  {_fmt(r.get('torch_s'))}  {_fmt(r.get('ratio'), '.2f'):>5}  "
                         f"{r['jax_images_per_s']:9.2f}  {r['jax_compile_s']:13.1f}  "
                         f"{_fmt(r.get('jax_memory_per_image_mib'), '.0f'):>7}  {_fmt(r.get('jax_tflops_per_s'), '.3f')}")
        if g.get("best_fraction_of_peak_fp32") is not None:
            lines.append(f"best fraction of fp32 peak: {g['best_fraction_of_peak_fp32']:.1%}")
    for key in ("attack", "attack-tf32"):
        a = report.get(key)
        if not (isinstance(a, dict) and "jax_s" in a and a["jax_s"] is not None):
            continue
        lines += ["", f"(b) attack ({a.get('precision', 'fp32')}): batch {a['batch']}, {a['size'][0]}x{a['size'][1]}, "
                      f"{a['tries']} tries x {a['steps']} steps",
                  f"  PGD+bisection  jax {a['jax_s']:.2f}s  torch {_fmt(a.get('torch_s'), '.2f')}s  ratio {_fmt(a.get('ratio'), '.2f')}",
                  f"  + DCT quantizer (jax) {a['jax_quantize_s']:.2f}s -> {a['jax_images_per_s']:.3f} images/s "
                  f"(torch PGD+bisection only: {_fmt(a.get('torch_images_per_s'), '.3f')} images/s)",
                  f"  compile (apart): attack {a['jax_compile_s']:.1f}s, quantizer {a['jax_quantize_compile_s']:.1f}s; "
                  f"memory {_fmt(a.get('jax_memory_per_image_mib'), '.0f')} MiB/image"]
        if a.get("torch_error"):
            lines.append(f"  torch: {a['torch_error']}")
    c = report.get("compile")
    if isinstance(c, dict) and "torch_compiled_s" in c:
        lines += ["", f"torch.compile, batch {c['batch']}: {c['torch_compiled_s']:.3f}s (eager {c['torch_eager_s']:.3f}s, "
                      f"first call {c['torch_compile_first_call_s']:.1f}s)"]
    o = report.get("options")
    if isinstance(o, dict) and "rows" in o:
        lines += ["", f"speed options ({o['images']} images {o['size'][0]}x{o['size'][1]}, model {report['settings']['options_model']})",
                  "option             grad_s  speedup  attack_s  success  d_points  mean_L2  grad_MiB"]
        for r in o["rows"]:
            mem = r["grad_memory"]["total"] / 2**20 if r.get("grad_memory") else None
            lines.append(f"{r['option']:<17}  {r['grad_s']:6.3f}  {r['grad_speedup_vs_first']:7.2f}  {r['attack_s']:8.2f}  "
                         f"{r['success_rate']:7.2f}  {r['success_points_vs_first']:+8.1f}  {r['mean_l2']:7.1f}  {_fmt(mem, '.0f'):>8}")
    for key in ("grad", "attack", "attack-tf32", "options", "compile"):
        if isinstance(report.get(key), dict) and "unavailable" in report[key]:
            lines.append(f"{key}: unavailable - {report[key]['unavailable']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="reduced sizes/iterations for a CPU (see QUICK)")
    p.add_argument("--json", default=None, help="write the report here (atomically, after every section)")
    p.add_argument("--only", default=None,
                   help="comma list of sections, run in this order: grad, attack, attack-tf32, options, compile "
                        "(default: grad,attack,options, plus compile without --quick)")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="(a) batch sizes, measured in this order")
    p.add_argument("--attack-batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="PGD steps per bisection try (paper setting: 10)")
    p.add_argument("--tries", type=int, default=None, help="bisection tries (paper: 7)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--options", default="fp32,tf32,bf16,remat,donate", help="speed options to compare (first = reference)")
    p.add_argument("--options-model", choices=("full", "tiny"), default=None,
                   help="model for the options section (tiny: the tiny KonCept512, random weights)")
    p.add_argument("--options-images", type=int, default=None, help="images attacked per speed option")
    p.add_argument("--option-batch", type=int, default=None, help="batch of the options' gradient timing")
    p.add_argument("--options-margin", type=float, default=0.0,
                   help="the options' attack aims below target - margin (the CLI's default margin is 1)")
    p.add_argument("--compile-batch", type=int, default=None, help="batch of the torch.compile section (default: largest of --batches)")
    p.add_argument("--deadline", type=float, default=None, metavar="SECONDS",
                   help="skip (and report as skipped) any unit of work that would end later than this after start")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="PyTorch intra-op threads (default: all cores)")
    args = p.parse_args(argv)

    budget = Budget(args.deadline)
    settings = dict(QUICK if args.quick else FULL)
    for k in ("batches", "attack_batch", "steps", "tries", "repeats", "options_model", "options_images", "option_batch"):
        if getattr(args, k) is not None:
            settings[k] = getattr(args, k)
    only = args.only or ("grad,attack,options" if args.quick else "grad,attack,options,compile")
    sections = [s.strip() for s in only.split(",") if s.strip()]
    unknown = set(sections) - {"grad", "attack", "attack-tf32", "options", "compile"}
    if unknown:
        p.error(f"unknown sections: {', '.join(sorted(unknown))}")

    import jax

    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    report: dict[str, Any] = {"benchmark": "qcamo_jax speed suite (benchmarks/run.py)", "command": " ".join(sys.argv),
                              "device": device_info(), "settings": settings, "size": [384, 512], "deadline_s": args.deadline}
    if args.quick:
        report["reductions"] = {k: (QUICK[k], FULL[k]) for k in QUICK if QUICK[k] != FULL[k]}
    report["device_name"] = report["device"]["name"]

    def save():
        for key in ("grad", "attack"):  # the contract: jax_s, torch_s, ratio under each key
            if isinstance(report.get(key), dict):
                report[key].setdefault("jax_s", None)
                report[key].setdefault("torch_s", None)
                report[key].setdefault("ratio", None)
        report["device"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
        if args.json:
            from qcamo_jax.fileio import atomic_write

            with atomic_write(args.json, "w") as f:
                f.write(json.dumps(report, indent=1, default=float) + "\n")

    on_gpu = jax.default_backend() == "gpu"
    torch_device = None
    if not args.no_torch:
        try:
            torch, torch_device = torch_setup(args.threads or os.cpu_count(), use_cuda=on_gpu)
            report["torch"] = {"version": torch.__version__, "device": torch_device, "threads": torch.get_num_threads()}
            if on_gpu and torch_device != "cuda":
                report["torch"]["note"] = "this PyTorch has no CUDA: PyTorch figures are for its CPU, not comparable"
        except ImportError as exc:
            report["torch"] = {"unavailable": str(exc)}

    from attack_pgd import build_models, photos

    t0 = time.perf_counter()
    calib = photos((384, 512), 4)
    try:
        tmodel, jmodel = build_models(calib, seed=0)
        if torch_device is not None:
            tmodel = tmodel.to(torch_device)
    except Exception as exc:
        log(traceback.format_exc())
        report["error"] = f"could not build the models: {type(exc).__name__}: {exc}"
        tmodel = jmodel = None
    report["setup_s"] = time.perf_counter() - t0
    save()

    def section(name, fn, estimate: Callable[[], float] = lambda: 0.0):
        log(f"[{name}] ({budget.left():.0f}s left)" if args.deadline else f"[{name}]")
        if jmodel is None:
            report[name] = {"unavailable": report["error"]}
        elif not budget.allows(estimate()):
            report[name] = {"unavailable": f"deadline: skipped with {budget.left():.0f}s left (needed ~{estimate():.0f}s)"}
        else:
            try:
                report[name] = fn()
            except Exception as exc:  # a missing piece of the project or a backend limit: say so, keep going
                log(traceback.format_exc())
                report[name] = {"unavailable": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
        save()

    runners: dict[str, tuple[Callable[[], dict], Callable[[], float]]] = {}
    runners["grad"] = (lambda: bench_grad(tmodel, jmodel, settings["batches"], settings["repeats"], (384, 512),
                                       torch_device, log, budget), lambda: 0.0)

    attack_images = settings["attack_batch"] * settings["tries"] * settings["steps"]

    def attack(precision_spec):
        import jax.numpy as jnp

        x = photos((384, 512), settings["attack_batch"]).astype(np.float32)
        clean = np.asarray(jax.jit(jmodel.apply)(jmodel.variables, jnp.asarray(x)))
        targets = (clean - 10.0).astype(np.float32)  # ten points below each image's own score
        return bench_attack(tmodel, jmodel, x, targets, settings["steps"], settings["tries"],
                            max(1, settings["repeats"] - 2), torch_device, log, precision_spec)

    # attack + quantizer + clean scores compiled; (repeats - 2) timed runs a side, one warm-up.
    attack_estimate = lambda: budget.estimate(images=attack_images, runs=2 * max(1, settings["repeats"] - 2) + 1, compiles=3)
    runners["attack"] = (lambda: attack("fp32"), attack_estimate)
    runners["attack-tf32"] = (lambda: attack("tf32"), attack_estimate)

    def options():
        import jax.numpy as jnp

        specs = [s for s in args.options.split(",") if s]
        if settings["options_model"] == "tiny":
            from qcamo_jax.models import hub

            model, size, drop = hub.load_model("tiny-random"), (96, 128), None
        else:
            model, size, drop = jmodel, (384, 512), 10.0
        x = photos(size, settings["options_images"]).astype(np.float32)
        clean = np.asarray(jax.jit(model.apply)(model.variables, jnp.asarray(x)))
        # Random tiny weights give scores near 0: aim 3% of the score spread below each image instead.
        drop = drop if drop is not None else 0.03 * float(np.ptp(clean) + np.abs(clean).mean())
        targets = (clean - drop).astype(np.float32)
        # The tiny model runs in milliseconds: more repeats to get above the timer noise.
        repeats = settings["repeats"] if settings["options_model"] == "full" else max(7, settings["repeats"])
        return bench_options(model, x, targets, specs, settings["option_batch"], settings["steps"],
                             settings["tries"], repeats, log, budget, margin=args.options_margin)

    runners["options"] = (options, lambda: 0.0)  # budgeted option by option inside

    def torch_compile():
        if torch_device is None:
            return {"unavailable": "PyTorch is not available"}
        batch = args.compile_batch or max(settings["batches"])
        return bench_torch_compile(tmodel, batch, settings["repeats"], (384, 512), torch_device, log)

    runners["compile"] = (torch_compile, lambda: 120.0)  # inductor's first call takes minutes on a large network
    for name in sections:
        section(name, *runners[name])
    print(table(report))
    if args.json:
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
