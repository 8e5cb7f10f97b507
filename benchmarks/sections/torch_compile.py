"""The ``torch.compile`` (inductor) reference of (a): the same gradient step, compiled by PyTorch.

Data contract: :func:`bench_torch_compile` returns seconds: ``torch_compiled_s`` (median), the first
call (compilation) apart, and the eager time of the same step.
"""

from __future__ import annotations

import time

import numpy as np

from sections.measure import median_time
from sections.torch_side import torch_grad_step

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
