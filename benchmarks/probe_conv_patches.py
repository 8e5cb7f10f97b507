"""Probe: KonCept512's non-1x1 convolutions as patches times the kernel (im2col) on XLA:CPU.

    python benchmarks/probe_conv_patches.py --json benchmarks/results-cpu-conv-patches.json

Why it exists: ``qcamo_jax/models/conv.py`` runs 1x1 convolutions as products because XLA:CPU's
product is as fast as PyTorch's oneDNN while its convolutions are 1.4-1.6x slower
(``benchmarks/conv_layers.py``). This probe asks whether the other convolutions gain the same way,
and records the answer for issue 14 (benchmarks/RESULTS.md). Not used by the package.

Two parts, forward + input gradient (cotangent of ones), medians of ``--repeats`` after two warm-ups:

* ``shapes``: every distinct non-1x1 convolution of the MediaEval KonCept512 at 384x512, alone:
  ``base`` (the package's ``conv_general_dilated``), ``patches`` (the kh*kw strided slices of the
  padded input concatenated on the channel axis, one ``dot_general`` with the kernel reshaped to
  ``[kh*kw*C_in, C_out]``; its gradient is a product and the slices' transposes) and, for kx1 kernels,
  ``transposed`` (the map's H and W swapped and the 1xk convolution run). Each alternative's input
  gradient is checked against ``base`` (relative max difference < 1e-4).
* ``network``: the whole model's forward + input gradient at batch 1 and 2 with the package's
  convolutions, and with the strided ones replaced by ``patches`` (the only kind that won alone),
  alternating twice.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from conv_layers import _median, network_convolutions  # noqa: E402  (benchmarks/ is on sys.path)
from report_json import emit  # noqa: E402


def patches_conv(x, k, strides, padding):
    """``x [N, H, W, C_in]`` (*) ``k [kh, kw, C_in, C_out]`` as one product over strided patches."""
    import jax.numpy as jnp
    from jax import lax

    kh, kw, c_in, c_out = k.shape
    pads = padding if not isinstance(padding, str) else lax.padtype_to_pads(x.shape[1:3], (kh, kw), strides, padding)
    xp = jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
    out_h, out_w = (xp.shape[1] - kh) // strides[0] + 1, (xp.shape[2] - kw) // strides[1] + 1
    cols = [lax.slice(xp, (0, i, j, 0), (xp.shape[0], i + (out_h - 1) * strides[0] + 1, j + (out_w - 1) * strides[1] + 1, c_in),
                      (1, strides[0], strides[1], 1)) for i in range(kh) for j in range(kw)]
    return lax.dot_general(jnp.concatenate(cols, axis=3), k.reshape(kh * kw * c_in, c_out), (((3,), (0,)), ((), ())))


def _base(x, k, strides, padding):
    from qcamo_jax.models import conv

    return conv.conv_general_dilated(x, k, strides, padding, dimension_numbers=conv.NHWC_HWIO)


def _transposed(x, k, strides, padding):
    import jax.numpy as jnp

    y = _base(jnp.swapaxes(x, 1, 2), jnp.swapaxes(k, 0, 1), tuple(strides)[::-1], padding)
    return jnp.swapaxes(y, 1, 2)


def shapes(size, repeats: int) -> list[dict]:
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    rows = []
    for (lhs, rhs, strides, pad), count in network_convolutions(size).items():
        if tuple(rhs[:2]) == (1, 1):
            continue
        x = jnp.asarray(rng.normal(size=lhs), jnp.float32)
        k = jnp.asarray(rng.normal(size=rhs) * 0.1, jnp.float32)
        impls = {"base": _base, "patches": patches_conv}
        if rhs[1] == 1:
            impls["transposed"] = _transposed
        row = {"input": list(lhs), "kernel": list(rhs), "strides": list(strides), "padding": str(pad), "count": count}
        reference = None
        for name, impl in impls.items():
            def fwd_and_input_grad(x, k, impl=impl):
                y, vjp = jax.vjp(lambda a: impl(a, k, strides, pad), x)
                return y, vjp(jnp.ones_like(y))[0]

            fn = jax.jit(fwd_and_input_grad)
            grad = fn(x, k)[1]
            if reference is None:
                reference = grad
            else:
                err = float(jnp.max(jnp.abs(grad - reference)) / jnp.max(jnp.abs(reference)))
                if err > 1e-4:
                    raise AssertionError(f"{name} {lhs} {rhs}: input gradient differs by {err:.2e}")
            row[f"{name}_s"] = _median(lambda: jax.block_until_ready(fn(x, k)), repeats)
        rows.append(row)
        print(f"{count:3d} x {str(tuple(lhs)):20s} k{tuple(rhs)} s{tuple(strides)} "
              + "  ".join(f"{n} {row[f'{n}_s'] * 1e3:.2f} ms" for n in impls), file=sys.stderr, flush=True)
    return rows


def network(size, repeats: int, batches) -> list[dict]:
    import jax
    import jax.numpy as jnp

    from qcamo_jax.models import conv, hub

    model = hub.init_random("koncept512", {"variant": "mediaeval", "size": "full"})
    original = conv.conv_general_dilated

    def strided_as_patches(lhs, rhs, window_strides, padding, *args, **kwargs):
        if tuple(int(s) for s in window_strides) != (1, 1):
            return patches_conv(lhs, rhs, tuple(int(s) for s in window_strides), padding)
        return original(lhs, rhs, window_strides, padding, *args, **kwargs)

    rows = []
    for batch in batches:
        x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (batch, *size, 3)), jnp.float32)
        row = {"batch": batch, "base_s": [], "strided_patches_s": []}
        for _ in range(2):
            for name, fn_conv in (("base_s", original), ("strided_patches_s", strided_as_patches)):
                conv.conv_general_dilated = fn_conv
                try:  # traced (and the convolution rule chosen) here; the timed calls reuse the executable
                    f = jax.jit(jax.value_and_grad(lambda v, x: model.apply(v, x).sum(), argnums=1))
                    jax.block_until_ready(f(model.variables, x))
                finally:
                    conv.conv_general_dilated = original
                row[name].append(_median(lambda: jax.block_until_ready(f(model.variables, x)), repeats))
        rows.append(row)
        print(f"batch {batch}: {row}", file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="384x512", help="H x W of the network's input")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    import jax

    from sections.measure import device_info

    size = tuple(int(v) for v in args.size.split("x"))
    report = {"command": "python benchmarks/probe_conv_patches.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "device": device_info(), "jax": jax.__version__, "size": list(size), "repeats": args.repeats,
              "shapes": shapes(size, args.repeats), "network": network(size, args.repeats, args.batches)}
    return emit(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
