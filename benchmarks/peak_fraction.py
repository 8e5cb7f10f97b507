"""FLOP rates and fractions of the GPU's peak for a results JSON of ``run.py``, counted here on any machine.

The FLOPs of a program are a property of its HLO, not of the device: this script traces the same
gradient program ``run.py`` times (forward + d(sum of scores)/d(pixels) of KonCept512, MediaEval
variant, at the recorded size, batch and speed option) with abstract shapes only (no weights, no
device work), lowers it for the CPU and reads XLA's HLO cost analysis, then divides by the times
recorded in the JSON and by the dense peak of the recorded GPU (``run.PEAK_TFLOPS``).

It exists because the first H200 runs recorded no usable FLOP count: the compiled GPU program's cost
analysis misses the cuDNN convolutions and the GPU-lowered one returned none (run.py now counts the
way this script does).

    python benchmarks/peak_fraction.py benchmarks/results-gpu-h200-1.json benchmarks/results-gpu-h200-2.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)


def gradient_flops(batch: int, size: tuple[int, int], option: str = "fp32") -> float:
    """HLO FLOPs of one forward + input-gradient pass of the full KonCept512 (MediaEval variant)."""
    import jax
    import jax.numpy as jnp

    from qcamo_jax import precision
    from qcamo_jax.models import koncept

    from run import hlo_flops

    module = koncept.build(variant="mediaeval", size="full")
    h, w = size
    variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, h, w, 3), jnp.float32))
    opts = precision.SpeedOptions.parse(option)
    variables = jax.eval_shape(lambda v: precision.prepare_variables(v, opts), variables)
    score = precision.wrap(lambda v, x: module.apply(v, x), opts)
    grad_fn = jax.jit(jax.value_and_grad(lambda v, x: score(v, x).sum(), argnums=1))
    flops = hlo_flops(grad_fn.trace(variables, jax.ShapeDtypeStruct((batch, h, w, 3), jnp.float32)))
    if flops is None:
        raise RuntimeError("XLA's cost analysis gave no FLOP count")
    return flops


def analyse(report: dict) -> list[dict]:
    from qcamo_jax.precision import SpeedOptions
    from run import gpu_peak, peak_arithmetic

    peak = gpu_peak(report["device"]["device_kind"])
    size = tuple(report.get("grad", {}).get("size") or report.get("size") or (384, 512))
    rows = []
    cache: dict[tuple, float] = {}

    def add(source, option, batch, seconds):
        key = (option, batch)
        if key not in cache:
            cache[key] = gradient_flops(batch, size, option)
        flops = cache[key]
        rate = flops / seconds / 1e12
        which = peak_arithmetic(SpeedOptions.parse(option))
        rows.append({"source": source, "option": option, "batch": batch, "seconds": seconds, "gflop": flops / 1e9,
                     "gflop_per_image": flops / 1e9 / batch, "tflops_per_s": rate, "peak": which,
                     "peak_tflops": peak[which] if peak else None,
                     "fraction_of_peak": rate / peak[which] if peak else None})

    grad = report.get("grad") or {}
    for r in grad.get("by_batch", []):
        add("grad", "fp32", r["batch"], r["jax_s"])
    options = report.get("options") or {}
    for r in options.get("rows", []):
        add("options", r["option"], r["grad_batch"], r["grad_s"])
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", help="results JSON files written by benchmarks/run.py")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)
    out = {}
    for path in args.results:
        with open(path) as f:
            report = json.load(f)
        rows = analyse(report)
        out[path] = {"device": report["device"]["name"], "rows": rows}
        print(f"{path}: {report['device']['name']}")
        print("source   option       batch  seconds  GFLOP/img  TFLOP/s  peak  of peak")
        for r in rows:
            frac = "-" if r["fraction_of_peak"] is None else f"{r['fraction_of_peak']:.1%}"
            print(f"{r['source']:<8} {r['option']:<12} {r['batch']:>5}  {r['seconds']:7.4f}  {r['gflop_per_image']:9.1f}  "
                  f"{r['tflops_per_s']:7.1f}  {r['peak']:<4}  {frac:>7}")
    if args.json:
        from qcamo_jax.fileio import atomic_write

        with atomic_write(args.json, "w") as f:
            f.write(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
