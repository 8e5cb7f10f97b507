"""JFIF colour conversion and 4:2:0 chroma resampling, exact (libjpeg fixed point) and float.

Data contract: one image ``[H, W, 3]`` in pixel units (0-255); planes are ``[H, W]``. Integer functions
take and return int32 arrays holding 8-bit values and reproduce libjpeg 6b bit for bit (the same code
is in libjpeg-turbo, whose SIMD paths are exact equivalents); float functions are their smooth,
differentiable counterparts (no rounding, no clamping).

References (IJG libjpeg 6b): ``jccolor.c`` (RGB -> YCbCr, 16-bit fixed point), ``jdcolor.c``
(YCbCr -> RGB), ``jcsample.c`` (``h2v2_downsample``: 2x2 box with alternating bias 1, 2),
``jdsample.c`` (``h2v2_fancy_upsample``: triangle filter 3/4-1/4 in both directions).
"""

from __future__ import annotations

import jax.numpy as jnp

_SCALEBITS = 16
_ONE_HALF = 1 << (_SCALEBITS - 1)
_CBCR_OFFSET = 128 << _SCALEBITS


def _fix16(x: float) -> int:
    return int(x * (1 << _SCALEBITS) + 0.5)


# jccolor.c: the tables hold FIX(c) * i; the rounding constants ride on the B (Y) and B/R (Cb/Cr) terms.
_Y = (_fix16(0.29900), _fix16(0.58700), _fix16(0.11400))
_CB = (-_fix16(0.16874), -_fix16(0.33126), _fix16(0.5))
_CR = (_fix16(0.5), -_fix16(0.41869), -_fix16(0.08131))
# jdcolor.c
_CR_R = _fix16(1.40200)
_CB_B = _fix16(1.77200)
_CR_G = _fix16(0.71414)
_CB_G = _fix16(0.34414)


def rgb_to_ycc_int(rgb):
    """libjpeg ``rgb_ycc_convert``: int ``[H, W, 3]`` RGB 0..255 -> int32 ``[H, W, 3]`` YCbCr 0..255."""
    x = jnp.asarray(rgb, jnp.int32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = (_Y[0] * r + _Y[1] * g + _Y[2] * b + _ONE_HALF) >> _SCALEBITS
    cb = (_CB[0] * r + _CB[1] * g + _CB[2] * b + _CBCR_OFFSET + _ONE_HALF - 1) >> _SCALEBITS
    cr = (_CR[0] * r + _CR[1] * g + _CR[2] * b + _CBCR_OFFSET + _ONE_HALF - 1) >> _SCALEBITS
    return jnp.stack([y, cb, cr], axis=-1)


def ycc_to_rgb_int(ycc):
    """libjpeg ``ycc_rgb_convert``: int ``[H, W, 3]`` YCbCr 0..255 -> int32 RGB 0..255 (range-limited)."""
    x = jnp.asarray(ycc, jnp.int32)
    y, cb, cr = x[..., 0], x[..., 1] - 128, x[..., 2] - 128
    r = y + ((_CR_R * cr + _ONE_HALF) >> _SCALEBITS)
    g = y + ((-_CB_G * cb + _ONE_HALF - _CR_G * cr) >> _SCALEBITS)
    b = y + ((_CB_B * cb + _ONE_HALF) >> _SCALEBITS)
    return jnp.clip(jnp.stack([r, g, b], axis=-1), 0, 255)


def rgb_to_ycc(rgb):
    """JFIF RGB -> YCbCr in float (``[..., 3]`` pixel units, no rounding): the smooth version."""
    x = jnp.asarray(rgb, jnp.float32)
    m = jnp.array(
        [[0.299, 0.587, 0.114], [-0.16874, -0.33126, 0.5], [0.5, -0.41869, -0.08131]], jnp.float32
    )
    return jnp.einsum("...c,kc->...k", x, m, precision="highest") + jnp.array([0.0, 128.0, 128.0])


def ycc_to_rgb(ycc):
    """JFIF YCbCr -> RGB in float (``[..., 3]``, no rounding, no clamping): the smooth version."""
    x = jnp.asarray(ycc, jnp.float32)
    y, cb, cr = x[..., 0], x[..., 1] - 128.0, x[..., 2] - 128.0
    return jnp.stack([y + 1.402 * cr, y - 0.34414 * cb - 0.71414 * cr, y + 1.772 * cb], axis=-1)


def downsample_420_int(plane):
    """libjpeg ``h2v2_downsample``: int ``[2h, 2w]`` -> int32 ``[h, w]``.

    ``(a + b + c + d + bias) >> 2`` with ``bias`` = 1, 2, 1, 2, ... along each output row (an ordered
    dither that avoids a systematic rounding drift). The caller pads the plane first (see codec).
    """
    x = jnp.asarray(plane, jnp.int32)
    h, w = x.shape[0] // 2, x.shape[1] // 2
    s = x.reshape(h, 2, w, 2).sum(axis=(1, 3))
    bias = jnp.where(jnp.arange(w) % 2 == 0, 1, 2).astype(jnp.int32)
    return (s + bias) >> 2


def downsample_420(plane):
    """Float 2x2 box average ``[2h, 2w] -> [h, w]`` (smooth version of :func:`downsample_420_int`)."""
    x = jnp.asarray(plane, jnp.float32)
    h, w = x.shape[0] // 2, x.shape[1] // 2
    return x.reshape(h, 2, w, 2).mean(axis=(1, 3))


def _neighbours(x, axis):
    n = x.shape[axis]
    idx = jnp.arange(n)
    prev = jnp.take(x, jnp.maximum(idx - 1, 0), axis=axis)  # edge rows/columns replicate
    nxt = jnp.take(x, jnp.minimum(idx + 1, n - 1), axis=axis)
    return prev, nxt


def upsample_420_int(plane):
    """libjpeg ``h2v2_fancy_upsample``: int ``[h, w]`` -> int32 ``[2h, 2w]``.

    Vertical: column sums ``3 * near + far`` (edge rows replicated); horizontal:
    ``(3 * this + neighbour + 8 or 7) >> 4`` (bias 8 for the left output sample, 7 for the right).
    """
    x = jnp.asarray(plane, jnp.int32)
    h, w = x.shape
    up, down = _neighbours(x, 0)
    colsum = jnp.stack([3 * x + up, 3 * x + down], axis=1).reshape(2 * h, w)
    left, right = _neighbours(colsum, 1)
    out = jnp.stack([(3 * colsum + left + 8) >> 4, (3 * colsum + right + 7) >> 4], axis=2)
    return out.reshape(2 * h, 2 * w)


def upsample_420(plane):
    """Float triangle upsampling ``[h, w] -> [2h, 2w]`` (smooth version of :func:`upsample_420_int`)."""
    x = jnp.asarray(plane, jnp.float32)
    h, w = x.shape
    up, down = _neighbours(x, 0)
    colsum = jnp.stack([0.75 * x + 0.25 * up, 0.75 * x + 0.25 * down], axis=1).reshape(2 * h, w)
    left, right = _neighbours(colsum, 1)
    out = jnp.stack([0.75 * colsum + 0.25 * left, 0.75 * colsum + 0.25 * right], axis=2)
    return out.reshape(2 * h, 2 * w)
