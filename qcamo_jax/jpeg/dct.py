"""8x8 block DCTs: the orthonormal float DCT-II / IDCT and bit-exact emulations of libjpeg's DCTs.

Layout: a block is ``[..., 8, 8]`` indexed ``[row, column]`` in the sample domain and ``[v, u]``
(vertical, horizontal frequency) in the DCT domain, natural order. Any leading dimensions are blocks
(e.g. ``[hb, wb, 8, 8]`` for one image component).

Units: the orthonormal 2-D DCT-II used here is the JPEG standard DCT (T.81 A.3.3,
``F[v,u] = C(u)C(v)/4 sum f[y,x] cos((2x+1)u pi/16) cos((2y+1)v pi/16)``); quantization tables are in
these units. libjpeg's fixed-point DCTs return scaled values:

* ``fdct_islow`` (jfdctint.c, 13-bit constants, 2 extra bits in pass 1): ``8 * F`` rounded;
* ``fdct_ifast`` (jfdctfst.c, AAN, 8-bit constants, truncating multiplies): ``8 * s_v * s_u * F``;
* ``fdct_float`` (jfdctflt.c, AAN in float32): ``8 * s_v * s_u * F``;

with ``s`` = :data:`qcamo_jax.jpeg.tables.AAN_SCALE_FACTORS`. ``idct_islow`` (jidctint.c) maps
dequantized coefficients to clamped 8-bit samples. The integer versions use int32 arithmetic with the
same operation order, rounding (``DESCALE``) and right shifts as the C code (IJG libjpeg 6b, identical
in libjpeg-turbo), so their results are bit-identical. Inputs are level-shifted samples
(``sample - 128``) as int32.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

# ---------------------------------------------------------------------------------------------------
# Orthonormal float DCT (differentiable)


def _dct_matrix() -> np.ndarray:
    k = np.arange(8)[:, None]
    n = np.arange(8)[None, :]
    c = np.cos((2 * n + 1) * k * np.pi / 16.0) * np.sqrt(2.0 / 8.0)
    c[0] /= np.sqrt(2.0)
    return c.astype(np.float32)


#: ``DCT_MATRIX[k, n]``: orthonormal 8-point DCT-II basis (rows = frequencies).
DCT_MATRIX = _dct_matrix()


def dct(blocks):
    """Orthonormal 2-D DCT-II of ``[..., 8, 8]`` float blocks (JPEG standard units)."""
    m = jnp.asarray(DCT_MATRIX)
    return jnp.einsum("vy,...yx,ux->...vu", m, blocks, m, precision="highest")


def idct(coefs):
    """Inverse of :func:`dct`: ``[..., 8, 8]`` float coefficients -> float samples."""
    m = jnp.asarray(DCT_MATRIX)
    return jnp.einsum("vy,...vu,ux->...yx", m, coefs, m, precision="highest")


# ---------------------------------------------------------------------------------------------------
# Block helpers


def blockify(plane):
    """``[8*hb, 8*wb]`` plane -> ``[hb, wb, 8, 8]`` blocks."""
    h, w = plane.shape
    return plane.reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3)


def unblockify(blocks):
    """``[hb, wb, 8, 8]`` blocks -> ``[8*hb, 8*wb]`` plane."""
    hb, wb = blocks.shape[:2]
    return blocks.transpose(0, 2, 1, 3).reshape(hb * 8, wb * 8)


def _rows(x):  # 1-D transform along the last axis (libjpeg pass 1 of the FDCT: rows)
    return [x[..., j] for j in range(8)]


def _cols(x):  # 1-D transform along axis -2 (columns)
    return [x[..., j, :] for j in range(8)]


# ---------------------------------------------------------------------------------------------------
# jfdctint.c: accurate integer forward DCT (JDCT_ISLOW)

_CONST_BITS = 13
_PASS1_BITS = 2


def _fix13(x: float) -> int:
    return int(x * (1 << _CONST_BITS) + 0.5)


_F_0_298631336 = _fix13(0.298631336)
_F_0_390180644 = _fix13(0.390180644)
_F_0_541196100 = _fix13(0.541196100)
_F_0_765366865 = _fix13(0.765366865)
_F_0_899976223 = _fix13(0.899976223)
_F_1_175875602 = _fix13(1.175875602)
_F_1_501321110 = _fix13(1.501321110)
_F_1_847759065 = _fix13(1.847759065)
_F_1_961570560 = _fix13(1.961570560)
_F_2_053119869 = _fix13(2.053119869)
_F_2_562915447 = _fix13(2.562915447)
_F_3_072711026 = _fix13(3.072711026)


def _descale(x, n: int):
    """libjpeg ``DESCALE``: round-half-up right shift, ``(x + 2**(n-1)) >> n`` (arithmetic)."""
    return jnp.right_shift(x + (1 << (n - 1)), n)


def _islow_1d(d, first_pass: bool, descale=None, xp=jnp):
    _descale_ = _descale if descale is None else descale
    i32 = xp.int32
    tmp0, tmp7 = d[0] + d[7], d[0] - d[7]
    tmp1, tmp6 = d[1] + d[6], d[1] - d[6]
    tmp2, tmp5 = d[2] + d[5], d[2] - d[5]
    tmp3, tmp4 = d[3] + d[4], d[3] - d[4]
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    out = [None] * 8
    if first_pass:
        out[0] = xp.left_shift(tmp10 + tmp11, _PASS1_BITS)
        out[4] = xp.left_shift(tmp10 - tmp11, _PASS1_BITS)
        sh = _CONST_BITS - _PASS1_BITS
    else:
        out[0] = _descale_(tmp10 + tmp11, _PASS1_BITS)
        out[4] = _descale_(tmp10 - tmp11, _PASS1_BITS)
        sh = _CONST_BITS + _PASS1_BITS
    z1 = (tmp12 + tmp13) * i32(_F_0_541196100)
    out[2] = _descale_(z1 + tmp13 * i32(_F_0_765366865), sh)
    out[6] = _descale_(z1 + tmp12 * i32(-_F_1_847759065), sh)
    z1 = tmp4 + tmp7
    z2 = tmp5 + tmp6
    z3 = tmp4 + tmp6
    z4 = tmp5 + tmp7
    z5 = (z3 + z4) * i32(_F_1_175875602)
    tmp4 = tmp4 * i32(_F_0_298631336)
    tmp5 = tmp5 * i32(_F_2_053119869)
    tmp6 = tmp6 * i32(_F_3_072711026)
    tmp7 = tmp7 * i32(_F_1_501321110)
    z1 = z1 * i32(-_F_0_899976223)
    z2 = z2 * i32(-_F_2_562915447)
    z3 = z3 * i32(-_F_1_961570560) + z5
    z4 = z4 * i32(-_F_0_390180644) + z5
    out[7] = _descale_(tmp4 + z1 + z3, sh)
    out[5] = _descale_(tmp5 + z2 + z4, sh)
    out[3] = _descale_(tmp6 + z2 + z3, sh)
    out[1] = _descale_(tmp7 + z1 + z4, sh)
    return out


def _linear_pass(fn_1d, first_pass: bool, shifts):
    """The integer matrix of one libjpeg islow pass: every output is ``DESCALE(M @ d, shift)``.

    All operations before the final ``DESCALE`` of jfdctint.c / jidctint.c are integer additions and
    multiplications by constants, so each 1-D pass is exactly an integer matrix product followed by a
    rounding shift. Extracting ``M`` from the reference code (unit inputs, descale disabled) gives the
    same bits with one int32 matmul per pass: much faster to compile and run than the butterfly.
    The extraction runs in NumPy at import time: importing this module must not start a JAX backend
    (``jax.distributed.initialize`` has to come first in a multi-host run).
    """
    eye = [np.eye(8, dtype=np.int32)[j] for j in range(8)]
    cols = fn_1d(eye, first_pass, descale=lambda x, n: x, xp=np)
    m = np.stack([np.asarray(c, np.int64) for c in cols])  # [out k, in j]
    assert np.abs(m).max() < 2**31
    return m.astype(np.int32), np.asarray(shifts, np.int32)


_SH1 = _CONST_BITS - _PASS1_BITS
_SH2 = _CONST_BITS + _PASS1_BITS
_FDCT_PASS1 = _linear_pass(_islow_1d, True, [0, _SH1, _SH1, _SH1, 0, _SH1, _SH1, _SH1])
_FDCT_PASS2 = _linear_pass(_islow_1d, False, [_PASS1_BITS, _SH2, _SH2, _SH2, _PASS1_BITS, _SH2, _SH2, _SH2])


def _apply_pass(x, pass_, axis: int):
    m, shifts = pass_
    if axis == -1:
        y = jnp.einsum("kj,...j->...k", jnp.asarray(m), x, preferred_element_type=jnp.int32)
        sh = jnp.asarray(shifts)
    else:
        y = jnp.einsum("kj,...jl->...kl", jnp.asarray(m), x, preferred_element_type=jnp.int32)
        sh = jnp.asarray(shifts)[:, None]
    rnd = jnp.where(sh > 0, jnp.left_shift(1, jnp.maximum(sh - 1, 0)), 0)
    return jnp.right_shift(y + rnd, sh)


def fdct_islow(samples):
    """libjpeg ``jpeg_fdct_islow``: int32 ``[..., 8, 8]`` level-shifted samples -> int32 ``8 * F``.

    Rows first (pass 1, 2 extra fraction bits), then columns, as in jfdctint.c.
    """
    x = jnp.asarray(samples, jnp.int32)
    return _apply_pass(_apply_pass(x, _FDCT_PASS1, -1), _FDCT_PASS2, -2)


def fdct_islow_reference(samples):
    """:func:`fdct_islow` written as jfdctint.c's butterfly (slower; kept as the readable reference)."""
    x = jnp.asarray(samples, jnp.int32)
    x = jnp.stack(_islow_1d(_rows(x), True), axis=-1)
    return jnp.stack(_islow_1d(_cols(x), False), axis=-2)


# ---------------------------------------------------------------------------------------------------
# jfdctfst.c: fast integer forward DCT (JDCT_IFAST), AAN with 8-bit constants

_F8_0_382683433 = 98
_F8_0_541196100 = 139
_F8_0_707106781 = 181
_F8_1_306562965 = 334


def _mul8(x, c: int):
    # jfdctfst.c without USE_ACCURATE_ROUNDING: DESCALE is a plain (truncating) arithmetic right shift.
    return jnp.right_shift(x * jnp.int32(c), 8)


def _aan_1d(d, mul, c0382, c0541, c0707, c1306):
    tmp0, tmp7 = d[0] + d[7], d[0] - d[7]
    tmp1, tmp6 = d[1] + d[6], d[1] - d[6]
    tmp2, tmp5 = d[2] + d[5], d[2] - d[5]
    tmp3, tmp4 = d[3] + d[4], d[3] - d[4]
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    out = [None] * 8
    out[0] = tmp10 + tmp11
    out[4] = tmp10 - tmp11
    z1 = mul(tmp12 + tmp13, c0707)
    out[2] = tmp13 + z1
    out[6] = tmp13 - z1
    tmp10 = tmp4 + tmp5
    tmp11 = tmp5 + tmp6
    tmp12 = tmp6 + tmp7
    z5 = mul(tmp10 - tmp12, c0382)
    z2 = mul(tmp10, c0541) + z5
    z4 = mul(tmp12, c1306) + z5
    z3 = mul(tmp11, c0707)
    z11 = tmp7 + z3
    z13 = tmp7 - z3
    out[5] = z13 + z2
    out[3] = z13 - z2
    out[1] = z11 + z4
    out[7] = z11 - z4
    return out


def fdct_ifast(samples):
    """libjpeg ``jpeg_fdct_ifast``: int32 ``[..., 8, 8]`` level-shifted samples -> int32 ``8 s_v s_u F``."""
    x = jnp.asarray(samples, jnp.int32)
    consts = (_F8_0_382683433, _F8_0_541196100, _F8_0_707106781, _F8_1_306562965)
    x = jnp.stack(_aan_1d(_rows(x), _mul8, *consts), axis=-1)
    return jnp.stack(_aan_1d(_cols(x), _mul8, *consts), axis=-2)


# ---------------------------------------------------------------------------------------------------
# jfdctflt.c: float AAN forward DCT (JDCT_FLOAT), float32 like libjpeg's FAST_FLOAT


def _mulf(x, c):
    return x * c


def fdct_float(samples):
    """libjpeg ``jpeg_fdct_float``: ``[..., 8, 8]`` level-shifted samples -> float32 ``8 s_v s_u F``.

    Same float32 operations in the same order as the C code; bit-exact unless the compiler of either
    side contracts multiply-adds (see docs/jpeg.md for the measured agreement).
    """
    x = jnp.asarray(samples, jnp.float32)
    consts = tuple(np.float32(c) for c in (0.382683433, 0.541196100, 0.707106781, 1.306562965))
    x = jnp.stack(_aan_1d(_rows(x), _mulf, *consts), axis=-1)
    return jnp.stack(_aan_1d(_cols(x), _mulf, *consts), axis=-2)


# ---------------------------------------------------------------------------------------------------
# jidctint.c: accurate integer inverse DCT (JDCT_ISLOW), with libjpeg's range-limit table


def _idct_islow_1d(d, first_pass: bool, descale=None, xp=jnp):
    _descale_ = _descale if descale is None else descale
    i32 = xp.int32
    z2, z3 = d[2], d[6]
    z1 = (z2 + z3) * i32(_F_0_541196100)
    tmp2 = z1 + z3 * i32(-_F_1_847759065)
    tmp3 = z1 + z2 * i32(_F_0_765366865)
    tmp0 = xp.left_shift(d[0] + d[4], _CONST_BITS)
    tmp1 = xp.left_shift(d[0] - d[4], _CONST_BITS)
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    tmp0, tmp1, tmp2, tmp3 = d[7], d[5], d[3], d[1]
    z1 = tmp0 + tmp3
    z2 = tmp1 + tmp2
    z3 = tmp0 + tmp2
    z4 = tmp1 + tmp3
    z5 = (z3 + z4) * i32(_F_1_175875602)
    tmp0 = tmp0 * i32(_F_0_298631336)
    tmp1 = tmp1 * i32(_F_2_053119869)
    tmp2 = tmp2 * i32(_F_3_072711026)
    tmp3 = tmp3 * i32(_F_1_501321110)
    z1 = z1 * i32(-_F_0_899976223)
    z2 = z2 * i32(-_F_2_562915447)
    z3 = z3 * i32(-_F_1_961570560) + z5
    z4 = z4 * i32(-_F_0_390180644) + z5
    tmp0 = tmp0 + z1 + z3
    tmp1 = tmp1 + z2 + z4
    tmp2 = tmp2 + z2 + z3
    tmp3 = tmp3 + z1 + z4
    sh = _CONST_BITS - _PASS1_BITS if first_pass else _CONST_BITS + _PASS1_BITS + 3
    return [
        _descale_(tmp10 + tmp3, sh),
        _descale_(tmp11 + tmp2, sh),
        _descale_(tmp12 + tmp1, sh),
        _descale_(tmp13 + tmp0, sh),
        _descale_(tmp13 - tmp0, sh),
        _descale_(tmp12 - tmp1, sh),
        _descale_(tmp11 - tmp2, sh),
        _descale_(tmp10 - tmp3, sh),
    ]


def idct_range_limit(x):
    """libjpeg's ``IDCT_range_limit[x & RANGE_MASK]``: level shift + clamp, with its wrap-around.

    In-range values give ``clip(x + 128, 0, 255)``; libjpeg masks with 1023 first, so values beyond
    about +-512 (corrupt or adversarial data) wrap to 0 or 255 exactly like the C table.
    """
    m = jnp.bitwise_and(x, 1023)
    return jnp.where(m < 128, m + 128, jnp.where(m < 512, 255, jnp.where(m < 896, 0, m - 896)))


_IDCT_PASS1 = _linear_pass(_idct_islow_1d, True, [_SH1] * 8)
_IDCT_PASS2 = _linear_pass(_idct_islow_1d, False, [_SH2 + 3] * 8)


def idct_islow(dequantized, range_limit: str = "wrap"):
    """libjpeg ``jpeg_idct_islow``: int32 ``[..., 8, 8]`` dequantized coefficients (``z * q``) -> samples.

    Returns int32 ``[..., 8, 8]`` samples in 0..255 (level shift and range limit included). Columns
    first, then rows, as in jidctint.c.

    Args:
      dequantized: int32 ``[..., 8, 8]``.
      range_limit: ``"wrap"``: the C code's ``IDCT_range_limit[x & 1023]`` table (libjpeg 6b/9,
        libjpeg-turbo without SIMD); ``"clamp"``: saturate to 0..255, what libjpeg-turbo's SIMD IDCTs do
        (Pillow, browsers). The two differ only where the IDCT output leaves -512..511, which the
        coefficients of real images never produce.
    """
    x = jnp.asarray(dequantized, jnp.int32)
    y = _apply_pass(_apply_pass(x, _IDCT_PASS1, -2), _IDCT_PASS2, -1)
    if range_limit == "wrap":
        return idct_range_limit(y)
    if range_limit == "clamp":
        return jnp.clip(y + 128, 0, 255)
    raise ValueError(f"range_limit must be 'wrap' or 'clamp', got {range_limit!r}")


def idct_islow_reference(dequantized):
    """:func:`idct_islow` written as jidctint.c's butterfly (the readable reference)."""
    x = jnp.asarray(dequantized, jnp.int32)
    x = jnp.stack(_idct_islow_1d(_cols(x), True), axis=-2)
    x = jnp.stack(_idct_islow_1d(_rows(x), False), axis=-1)
    return idct_range_limit(x)


def aan_scale() -> np.ndarray:
    """``8 * s_v * s_u`` as float64 [8, 8]: the factor the AAN DCTs leave in each coefficient."""
    from qcamo_jax.jpeg.tables import AAN_SCALE_FACTORS

    return 8.0 * np.outer(AAN_SCALE_FACTORS, AAN_SCALE_FACTORS)

