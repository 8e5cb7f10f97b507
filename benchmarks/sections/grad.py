"""(a) forward + input gradient: the step every attack iteration makes, JAX against PyTorch, by batch size.

Data contract: :func:`bench_grad` returns ``{"by_batch": [row, ...], "jax_s", "torch_s", "ratio", ...}``
(seconds per pass over one batch at the largest batch measured; ``ratio = jax_s / torch_s``), each row
with FLOPs, TFLOP/s, XLA memory in bytes and, on a known GPU, the fraction of its fp32 peak. JAX and
PyTorch calls alternate (:func:`sections.measure.alternating_times`); ``ratio_per_round`` holds each
round's JAX / PyTorch ratio.
"""

from __future__ import annotations

import numpy as np

from sections.measure import (Budget, alternating_times, compile_timed, device_peak_bytes, gpu_peak,
                              per_round_ratios, xla_flops, xla_memory)
from sections.torch_side import torch_grad_step

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
        sides = {"jax": lambda: jax.block_until_ready(compiled(jmodel.variables, xj))}
        if tstep is not None:
            sides["torch"] = lambda: tstep(x)
        timed = alternating_times(sides, repeats, warmup=2)  # JAX and PyTorch call by call, not one block each
        jax_s, jax_runs = timed["jax"].median_s, timed["jax"].runs_s
        flops = compiled.hlo_flops
        row = {"batch": b, "jax_s": jax_s, "jax_runs_s": jax_runs, "jax_minflt_per_run": timed["jax"].minflt,
               "jax_compile_s": compile_s,
               "jax_images_per_s": b / jax_s, "flops": flops, "flops_compiled_cost_analysis": xla_flops(compiled),
               "jax_tflops_per_s": flops / jax_s / 1e12 if flops else None,
               "jax_memory": xla_memory(compiled), "device_peak_bytes": device_peak_bytes()}
        if row["jax_memory"]:
            row["jax_memory_per_image_mib"] = row["jax_memory"]["total"] / b / 2**20
        if peak and flops:
            row["fraction_of_peak_fp32"] = flops / jax_s / 1e12 / peak["fp32"]
        if tstep is not None:
            xt = x
            row["torch_s"], row["torch_runs_s"] = timed["torch"].median_s, timed["torch"].runs_s
            row["torch_minflt_per_run"] = timed["torch"].minflt
            row["ratio"] = row["jax_s"] / row["torch_s"]
            row["ratio_per_round"] = per_round_ratios(jax_runs, row["torch_runs_s"])
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
