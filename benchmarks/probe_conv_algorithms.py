"""Probe: other algorithms for KonCept512's spatial convolutions, timed inside the whole gradient.

    python benchmarks/probe_conv_algorithms.py [--batch 2] [--rounds 9] [--variants base,winograd,...] [--json PATH]

``qcamo_jax.models.conv`` runs every spatial (non-1x1) convolution on XLA:CPU's own (Eigen) kernels.
Alone, some of them run slower than PyTorch's oneDNN kernels (``benchmarks/conv_layers.py``). This
probe swaps in two textbook algorithms for chosen shapes, traces the full MediaEval KonCept512's
forward + input gradient once per variant, and times the variants alternately in one process
(``sections.measure.alternating_times``, two warm-up rounds), so the figure is the effect on the
whole gradient, not on a convolution alone:

* ``winograd``: Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for
  Convolutional Neural Networks", CVPR 2016) for stride-1 3x3 convolutions with C_in x C_out >=
  ``--winograd-min`` (KonCept512's large ones): 16 batched products instead of 36 multiplications per
  2x2 output tile. JAX differentiates the transforms, so the input gradient is Winograd-shaped too.
* ``im2col-7x1``, ``im2col-1x7``, ``im2col-3x1-1x3``: the convolution as one product over its
  ``kh * kw * C_in`` patch channels (``probe_conv_patches.patches_conv``, which tried it on the
  strided convolutions).

The variants change summation order only: the JSON holds each one's largest score difference and the
relative L2 distance of its input gradient from ``base``. It changes nothing in the package.

JSON: ``median_s`` and ``runs_s`` per variant, ``paired_ratio_median`` (variant / base, round by
round), the differences, the device and this command.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import qcamo_jax  # noqa: E402,F401  (sets the package's XLA:CPU flags before JAX starts)

VARIANTS = ("base", "winograd", "im2col-7x1", "im2col-1x7", "im2col-3x1-1x3")

#: F(2x2, 3x3) transforms (Lavin and Gray 2016, section 4.1): data B^T, filter G, output A^T.
_BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_G = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))
_AT = ((1, 1, 1, 0), (0, 1, -1, -1))


def winograd_conv(x, w, padding):
    """Stride-1 3x3 convolution by F(2x2, 3x3): ``x [B, H, W, C]``, ``w [3, 3, C, O]``, explicit ``padding``."""
    import jax.numpy as jnp
    from jax import lax

    b, h, wd, _ = x.shape
    out_h, out_w = h + sum(padding[0]) - 2, wd + sum(padding[1]) - 2
    th, tw = -(-out_h // 2), -(-out_w // 2)  # 2x2 output tiles
    xp = jnp.pad(x, ((0, 0), (padding[0][0], 2 * th + 2 - h - padding[0][0]),
                     (padding[1][0], 2 * tw + 2 - wd - padding[1][0]), (0, 0)))
    bt = jnp.asarray(_BT, x.dtype)
    rows = jnp.stack([xp[:, r:r + 2 * th:2] for r in range(4)])                # [4, B, th, Wp, C]
    rows = jnp.einsum("ar,rbhwc->abhwc", bt, rows)
    tiles = jnp.stack([rows[:, :, :, s:s + 2 * tw:2] for s in range(4)], 1)     # [4, 4, B, th, tw, C]
    v = jnp.einsum("bs,asnhwc->abnhwc", bt, tiles).reshape(16, -1, x.shape[-1])
    g = jnp.asarray(_G, w.dtype)
    u = jnp.einsum("ar,rsco,bs->abco", g, w, g, precision=lax.Precision.HIGHEST).reshape(16, w.shape[2], w.shape[3])
    m = jnp.einsum("ktc,kco->kto", v, u, precision=lax.Precision.HIGHEST).reshape(4, 4, b, th, tw, -1)
    at = jnp.asarray(_AT, x.dtype)
    y = jnp.einsum("ia,jb,abnhwo->nhiwjo", at, at, m)                            # [B, th, 2, tw, 2, O]
    return y.reshape(b, 2 * th, 2 * tw, -1)[:, :out_h, :out_w]


def im2col_conv(x, w, padding):
    """Stride-1 :func:`probe_conv_patches.patches_conv`: one product over the ``kh * kw * C_in`` patch channels."""
    from probe_conv_patches import patches_conv

    return patches_conv(x, w, (1, 1), padding)


def choose(variant: str, kernel_shape, winograd_min: int):
    """The replacement for a stride-1 convolution with this kernel under ``variant``, or None (keep Eigen's)."""
    kh, kw, c_in, c_out = kernel_shape
    if variant == "winograd" and (kh, kw) == (3, 3) and c_in * c_out >= winograd_min:
        return winograd_conv
    if (variant == "im2col-7x1" and (kh, kw) == (7, 1)) or (variant == "im2col-1x7" and (kh, kw) == (1, 7)) \
            or (variant == "im2col-3x1-1x3" and (kh, kw) in ((3, 1), (1, 3))):
        return im2col_conv
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list, the first is the reference ({', '.join(VARIANTS)})")
    p.add_argument("--winograd-min", type=int, default=6000, help="smallest C_in x C_out given to Winograd")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if not variants or set(variants) - set(VARIANTS):
        p.error(f"--variants: choose from {', '.join(VARIANTS)}")

    import jax
    import jax.numpy as jnp
    import numpy as np

    from attack_pgd import build_models, photos
    from qcamo_jax.models import conv
    from report_json import emit
    from sections.measure import alternating_times, device_info, per_round_ratios

    _, model = build_models(photos((384, 512), 4), 0)
    x = jnp.asarray(photos((384, 512), args.batch).astype(np.float32))
    eigen = conv._conv
    current = {"variant": "base"}
    counts = {v: 0 for v in variants}

    def dispatch(strides, padding, dilation, precision, lhs, rhs):
        kh, kw = rhs.shape[:2]
        explicit = (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)) if padding == "SAME" else padding
        if strides == (1, 1) and dilation == (1, 1) and not isinstance(explicit, str):
            algorithm = choose(current["variant"], rhs.shape, args.winograd_min)
            if algorithm is not None:
                counts[current["variant"]] += 1
                return algorithm(lhs, rhs, explicit)
        return eigen(strides, padding, dilation, precision, lhs, rhs)

    compiled = {}
    conv._conv = dispatch  # read by conv.conv_general_dilated at trace time; restored below
    try:
        for v in variants:
            current["variant"] = v
            fn = jax.jit(jax.value_and_grad(lambda var, im: model.apply(var, im).sum(), argnums=1))
            compiled[v] = fn.lower(model.variables, x).compile()
    finally:
        conv._conv = eigen
    outputs = {v: compiled[v](model.variables, x) for v in variants}
    s0, g0 = outputs[variants[0]]
    timed = alternating_times({v: (lambda v=v: jax.block_until_ready(compiled[v](model.variables, x))) for v in variants},
                              args.rounds, warmup=2)
    base_runs = timed[variants[0]].runs_s
    report = {
        "command": "python benchmarks/probe_conv_algorithms.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": device_info(), "batch": args.batch, "size": [384, 512], "winograd_min": args.winograd_min,
        "convolutions_replaced": counts,
        "median_s": {v: t.median_s for v, t in timed.items()},
        "runs_s": {v: t.runs_s for v, t in timed.items()},
        "paired_ratio_median": {v: float(np.median(per_round_ratios(timed[v].runs_s, base_runs))) for v in variants},
        "score_max_abs_diff": {v: float(jnp.max(jnp.abs(outputs[v][0] - s0))) for v in variants},
        "grad_relative_l2_diff": {v: float(jnp.linalg.norm(outputs[v][1] - g0) / jnp.linalg.norm(g0)) for v in variants},
    }
    return emit(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
