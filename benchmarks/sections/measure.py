"""Measuring helpers of the speed suite: wall time, compile time, FLOPs, memory, device, deadline.

Data contract: times are wall-clock seconds (``time.perf_counter``), medians of ``repeats`` runs after
``warmup`` runs; FLOPs are XLA HLO cost-analysis counts (floats); memory is bytes; peak rates are dense
TFLOP/s from NVIDIA's data sheets. Every timed function must itself block until its result is ready.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import statistics
import time
from typing import Any, Callable

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


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` (which must block until its result is ready) after ``warmup`` calls:
    :func:`alternating_times` with one side."""
    timed = alternating_times({"fn": fn}, repeats, warmup)["fn"]
    return timed.median_s, timed.runs_s


@dataclasses.dataclass
class Timed:
    """One side of :func:`alternating_times`: median and per-round wall seconds, the minor page faults
    of each timed call (this process's, ``getrusage``: a call that gets fresh memory from the kernel
    shows here) and the last call's result."""

    median_s: float
    runs_s: list[float]
    minflt: list[int]
    last: Any


def alternating_times(calls: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, Timed]:
    """Time several calls side by side, round by round: ``{name: Timed}``.

    Warm-up and timed rounds alike call each side once, in the given order when the round's index is
    even and in reverse when odd, so that a machine whose speed drifts during the run (a shared host:
    this suite's CPUs drift by +-10% within minutes, benchmarks/RESULTS.md) weighs on every side alike
    and no side always runs right after the same other one. In one process the sides share the heap:
    a side's first calls after another's may find its freed memory taken and fault in fresh pages, so
    two warm-up rounds let the heap settle before timing (``minflt`` shows what remains).
    """
    names = list(calls)
    last: dict[str, Any] = {}
    runs: dict[str, list[float]] = {name: [] for name in names}
    faults: dict[str, list[int]] = {name: [] for name in names}
    for r in range(-warmup, repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            result = calls[name]()
            seconds, flt = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
            if r == repeats - 1:
                last[name] = result
            del result  # kept only from the last round: results held across the other side's call fragment the heap
            if r >= 0:
                runs[name].append(seconds)
                faults[name].append(flt)
    return {name: Timed(statistics.median(runs[name]), runs[name], faults[name], last.get(name)) for name in names}


def per_round_ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    """``numerator[i] / denominator[i]``: two sides' runs of :func:`alternating_times`, round by round."""
    return [round(a / b, 4) for a, b in zip(numerator, denominator)]


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


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; :func:`platform.processor` where that cannot be read)."""
    from qcamo_jax.xla_flags import cpuinfo_field

    return cpuinfo_field("model name") or platform.processor()


def device_info() -> dict[str, Any]:
    import jax

    dev = jax.devices()[0]
    info = {"backend": jax.default_backend(), "device_kind": dev.device_kind, "device_count": jax.device_count(),
            "jax": jax.__version__, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "loadavg_start": [round(v, 2) for v in os.getloadavg()]}
    info["cpu"] = cpu_name()
    info["xla_flags"] = os.environ.get("XLA_FLAGS", "")  # the user's and qcamo_jax.xla_flags' defaults
    from qcamo_jax import host_malloc

    info["malloc"] = dict(host_malloc.APPLIED)  # qcamo_jax.host_malloc's settings, {} if none were set
    info["malloc_skipped"] = host_malloc.SKIPPED  # why not, or None
    info["name"] = dev.device_kind if info["backend"] != "cpu" else f"CPU {info['cpu']} ({os.cpu_count()} cores)"
    return info


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
