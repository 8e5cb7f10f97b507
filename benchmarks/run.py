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
in a rate. Every timed JAX call ends in ``block_until_ready``. JAX and PyTorch calls alternate round by
round; times are medians of ``--repeats`` rounds after two warm-up rounds (gradients) and of
``--attack-repeats`` rounds after one warm-up round (attacks).

The model is the MediaEval KonCept512 (the PyTorch port) with random weights, batch norms calibrated on
real photos so scores look like MOS (``benchmarks/attack_pgd.py:build_models``), converted to Flax with
the project's converter: both frameworks run the same network with the same weights. JSON keys ``grad``
and ``attack`` each hold ``jax_s``, ``torch_s`` and ``ratio = jax_s / torch_s`` (below 1: JAX faster),
and ``device`` names the machine. See benchmarks/README.md.

This file is the thin runner (command line, section order, JSON writing); each section and the
measuring helpers live in ``benchmarks/sections/`` (see its ``__init__``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Any, Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

# First, before anything starts a JAX backend: importing the package sets its default XLA:CPU flags
# (qcamo_jax/xla_flags.py), which XLA reads once. Without this line the suite measured jaxlib's own
# kernel choices, not the package's defaults (device_info() below starts the backend).
import qcamo_jax  # noqa: E402,F401
from sections.attack import bench_attack  # noqa: E402  (needs HERE on sys.path)
from sections.grad import bench_grad  # noqa: E402
# The measuring helpers are re-exported: tests/test_benchmarks.py and peak_fraction.py use them as run.<name>.
from sections.measure import (PEAK_TFLOPS, Budget, compile_timed, device_info, device_peak_bytes,  # noqa: E402,F401
                              gpu_peak, hlo_flops, median_time, peak_arithmetic, xla_flops, xla_memory)
from sections.options import bench_options  # noqa: E402
from sections.table import table  # noqa: E402
from sections.torch_compile import bench_torch_compile  # noqa: E402
from sections.torch_side import torch_setup  # noqa: E402

#: ``--quick`` reductions (printed in the report and stored in the JSON).
#: Timed rounds are odd: a median of two is their mean, which one disturbed call sets (2026-12-07).
QUICK = {"batches": [1, 2], "attack_batch": 1, "steps": 2, "tries": 2, "repeats": 3, "attack_repeats": 3, "option_batch": 4,
         "options_model": "tiny", "options_images": 4}
FULL = {"batches": [1, 4, 8, 16, 32], "attack_batch": 8, "steps": 10, "tries": 7, "repeats": 5, "attack_repeats": 3, "option_batch": 16,
        "options_model": "full", "options_images": 32}


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
    p.add_argument("--repeats", type=int, default=None, help="timed rounds of each gradient (after two warm-up rounds)")
    p.add_argument("--attack-repeats", type=int, default=None, help="timed rounds of each attack (after one warm-up round)")
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

    for name in ("repeats", "attack_repeats"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    budget = Budget(args.deadline)
    settings = dict(QUICK if args.quick else FULL)
    for k in ("batches", "attack_batch", "steps", "tries", "repeats", "attack_repeats", "options_model", "options_images",
              "option_batch"):
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
                            settings["attack_repeats"], torch_device, log, precision_spec)

    # attack + quantizer + clean scores compiled; a first JAX run, then (attack_repeats + 1) rounds of both sides.
    attack_estimate = lambda: budget.estimate(images=attack_images, runs=2 * (settings["attack_repeats"] + 1) + 1, compiles=3)
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
