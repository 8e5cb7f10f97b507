"""KonCept512's convolutions one shape at a time: forward + input gradient, JAX against PyTorch.

Where the CPU gap of ``run.py``'s (a) lives. Traces the MediaEval KonCept512 once at ``--size`` to list
every convolution it runs (input shape, kernel, strides, padding; how many times), then times each
distinct one alone: JAX through ``qcamo_jax.models.conv.conv_general_dilated`` (what the models call:
1x1 convolutions as products, the CPU kernel-order fix), one ``jax.jit`` of the output and the input
gradient (cotangent of ones), and PyTorch's ``conv2d`` with ``autograd.grad`` for the input only.
Medians of ``--repeats`` after two warm-up runs; random data (the weights do not change the time).

Each row: ``count`` (in the network), ``jax_s`` / ``torch_s`` (one call, seconds), ``ratio``, GFLOP/s of
both (2 x MACs x 2 for forward + input gradient), and JAX's forward alone (``jax_forward_s``) and input
gradient alone (``jax_input_grad_s``, a random cotangent); totals weighted by ``count`` per kernel kind, and
over the network. Run alone on an idle machine: both libraries use every core.

The report names the ``XLA_FLAGS`` in force (``device.xla_flags``, the package's defaults included), so
runs with other XLA:CPU kernel choices compare row by row.

Usage:
  python benchmarks/conv_layers.py --json benchmarks/results-cpu-conv-layers.json
  python benchmarks/conv_layers.py --batch 2 --json ...   (each shape at batch 2: how the time scales)
  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=individual_convolution,dot python benchmarks/conv_layers.py --json ...
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from report_json import emit  # noqa: E402  (benchmarks/ is on sys.path: run as a script)


def _median(fn, repeats: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def network_convolutions(size: tuple[int, int]) -> collections.Counter:
    """``(input shape, kernel shape, strides, padding) -> count`` of the compiled MediaEval KonCept512."""
    import jax
    import jax.numpy as jnp

    from qcamo_jax.models import conv, hub

    seen = []
    original = conv.conv_general_dilated

    def record(lhs, rhs, window_strides, padding, *args, **kwargs):
        pad = padding if isinstance(padding, str) else tuple(tuple(int(v) for v in p) for p in padding)
        seen.append((tuple(lhs.shape), tuple(rhs.shape), tuple(int(s) for s in window_strides), pad))
        return original(lhs, rhs, window_strides, padding, *args, **kwargs)

    model = hub.init_random("koncept512", {"variant": "mediaeval", "size": "full"})
    conv.conv_general_dilated = record
    try:
        jax.jit(model.apply).lower(model.variables, jnp.zeros((1, *size, 3), jnp.float32))
    finally:
        conv.conv_general_dilated = original
    counts = collections.Counter(seen)
    # Flax's nn.Conv calls the function twice while tracing (once for shapes only): halve the counts.
    return collections.Counter({k: v // 2 for k, v in counts.items()}) if all(v % 2 == 0 for v in counts.values()) else counts


def _torch_padding(pad, kernel) -> tuple[int, int]:
    if pad == "VALID":
        return 0, 0
    if pad == "SAME":  # odd kernels at stride 1, or stride 2 with even input: symmetric enough for timing
        return (kernel[0] - 1) // 2, (kernel[1] - 1) // 2
    return pad[0][0], pad[1][0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="384x512", help="H x W of the network's input")
    p.add_argument("--batch", type=int, default=1, help="images per call (the network is traced at batch 1)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: its own choice)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from qcamo_jax.models import conv

    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and args.threads:
        torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(0)
    rows = []
    for (lhs, rhs, strides, pad), count in network_convolutions(size).items():
        lhs = (args.batch, *lhs[1:])
        x = jnp.asarray(rng.normal(size=lhs), jnp.float32)
        k = jnp.asarray(rng.normal(size=rhs) * 0.1, jnp.float32)

        def layer(x, k, strides=strides, pad=pad):
            return conv.conv_general_dilated(x, k, strides, pad, dimension_numbers=conv.NHWC_HWIO)

        def fwd_and_input_grad(x, k):
            y, vjp = jax.vjp(lambda a: layer(a, k), x)
            return y, vjp(jnp.ones_like(y))[0]

        def input_grad(x, k, cotangent):
            return jax.vjp(lambda a: layer(a, k), x)[1](cotangent)[0]

        fn = jax.jit(fwd_and_input_grad)
        y = fn(x, k)[0]
        out_hw = y.shape[1:3]
        jax_s = _median(lambda: jax.block_until_ready(fn(x, k)), args.repeats)
        # Each direction alone too (XLA may pick other kernels for each; see docs/scaling.md "CPU flags").
        forward, backward = jax.jit(layer), jax.jit(input_grad)
        cotangent = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
        jax_forward_s = _median(lambda: jax.block_until_ready(forward(x, k)), args.repeats)
        jax_input_grad_s = _median(lambda: jax.block_until_ready(backward(x, k, cotangent)), args.repeats)
        flops = 2 * 2 * out_hw[0] * out_hw[1] * rhs[0] * rhs[1] * rhs[2] * rhs[3] * lhs[0]
        row = {"input": list(lhs), "kernel": list(rhs), "strides": list(strides), "padding": str(pad), "count": count,
               "jax_s": jax_s, "jax_gflops": flops / jax_s / 1e9, "jax_forward_s": jax_forward_s,
               "jax_input_grad_s": jax_input_grad_s}
        if torch is not None:
            xt = torch.randn(lhs[0], lhs[3], lhs[1], lhs[2])
            kt = torch.randn(rhs[3], rhs[2], rhs[0], rhs[1]) * 0.1
            tpad = _torch_padding(pad, rhs)

            def torch_step():
                a = xt.detach().requires_grad_(True)
                y = torch.nn.functional.conv2d(a, kt, stride=strides, padding=tpad)
                return torch.autograd.grad(y, a, torch.ones_like(y))[0]

            row["torch_s"] = _median(torch_step, args.repeats)
            row["torch_gflops"] = flops / row["torch_s"] / 1e9
            row["ratio"] = jax_s / row["torch_s"]
        rows.append(row)
        print(f"{count:3d} x {str(tuple(lhs)):20s} k{tuple(rhs)} s{tuple(strides)} jax {jax_s * 1e3:7.2f} ms"
              + (f"  torch {row['torch_s'] * 1e3:7.2f} ms  ratio {row['ratio']:.2f}" if "ratio" in row else ""),
              file=sys.stderr, flush=True)

    def kind(row):
        kh, kw = row["kernel"][:2]
        return f"{kh}x{kw}" + ("/2" if row["strides"][0] == 2 else "")

    by_kind = {}
    for row in rows:
        agg = by_kind.setdefault(kind(row), {"convolutions": 0, "jax_s": 0.0, "jax_forward_s": 0.0,
                                             "jax_input_grad_s": 0.0, "torch_s": 0.0})
        agg["convolutions"] += row["count"]
        for key in ("jax_s", "jax_forward_s", "jax_input_grad_s"):
            agg[key] += row["count"] * row[key]
        agg["torch_s"] += row["count"] * row.get("torch_s", float("nan"))
    for agg in by_kind.values():
        agg["ratio"] = agg["jax_s"] / agg["torch_s"]
    total = {key: sum(a[key] for a in by_kind.values())
             for key in ("jax_s", "jax_forward_s", "jax_input_grad_s", "torch_s")}
    total["ratio"] = total["jax_s"] / total["torch_s"]
    from sections.measure import device_info

    report = {"command": "python benchmarks/conv_layers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "device": device_info(), "size": list(size), "batch": args.batch, "repeats": args.repeats,
              "torch": None if torch is None else torch.__version__, "jax": jax.__version__,
              "total": total, "by_kind": by_kind, "rows": rows}
    return emit(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
