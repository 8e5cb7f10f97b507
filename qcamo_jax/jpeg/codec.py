"""JPEG encoder and decoder emulation in JAX (libjpeg 6b, baseline, YCbCr, 4:4:4 or 4:2:0).

Data contract (one image; batch with ``jax.vmap``; everything jit-able with the options static):

* pixels: ``uint8 [H, W, 3]`` RGB (exact paths) or ``float32 [H, W, 3]`` in pixel units 0-255 (smooth
  paths);
* DCT coefficients: per component ``[hb, wb, 8, 8]``, block grid ``hb x wb``, each block ``[v, u]``
  in natural order (row = vertical frequency). Luma has ``ceil(H/8) x ceil(W/8)`` blocks; chroma the
  same in 4:4:4 and ``ceil(H/16) x ceil(W/16)`` in 4:2:0 (the block grids libjpeg, jpeglib and every
  decoder use; MCU padding blocks are not stored here);
* "DCT units": the JPEG standard (orthonormal) DCT of level-shifted samples, the units of the
  quantization tables. An integer coefficient ``z`` with table entry ``q`` means ``z * q`` DCT units.

Encoder pipeline (libjpeg ``jpeg_write_scanlines`` with default settings):
RGB -> YCbCr (``jccolor.c`` fixed point) -> edge padding and 4:2:0 box downsampling (``jcprepct.c``,
``jcsample.c``) -> level shift -> forward DCT ``islow`` / ``ifast`` / ``float`` -> quantization
(``jcdctmgr.c``). Edge padding: each plane is extended to whole blocks by replicating its last column
and last row; in 4:2:0 the full-resolution chroma is first extended to an even height and to
``16 * ceil(W/16)`` columns, box-averaged, and the subsampled plane is then extended by replicating its
last row.

Decoder pipeline (libjpeg / libjpeg-turbo ``jpeg_read_scanlines`` defaults): dequantize -> ``islow``
IDCT with range limit -> ``h2v2_fancy_upsample`` for 4:2:0 chroma -> YCbCr -> RGB (``jdcolor.c``).

What the DCT-domain quantizer needs is exported here: :func:`forward_dct` (unquantized coefficients
exactly as the chosen encoder computes them, with their quantization steps), :func:`quantize`,
:func:`dequantize`, :func:`decode_float` (differentiable dequantized coefficients -> float pixels),
:func:`decode` (exact integer decode) and the :class:`JpegCoefficients` container (defined in
:mod:`qcamo_jax.jpeg.coefficients`, with :class:`ForwardDCT`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from qcamo_jax.jpeg import color, dct, tables
from qcamo_jax.jpeg.coefficients import ForwardDCT, JpegCoefficients

DCT_METHODS = ("islow", "ifast", "float")
SUBSAMPLINGS = ("444", "420")


# ---------------------------------------------------------------------------------------------------
# Input checks (raise ValueError naming the expected shape)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_options(dct_method: str, subsampling: str) -> None:
    if dct_method not in DCT_METHODS:
        raise ValueError(f"dct_method must be one of {DCT_METHODS}, got {dct_method!r}")
    if subsampling not in SUBSAMPLINGS:
        raise ValueError(f"subsampling must be one of {SUBSAMPLINGS}, got {subsampling!r}")


def check_image(image, *, integer: bool = True, name: str = "image"):
    """Validate one RGB image. Returns it as a JAX array (uint8->int32 untouched otherwise).

    Args:
      image: ``uint8 [H, W, 3]`` (``integer=True``; other integer dtypes are accepted when their values
        are in 0..255) or ``float [H, W, 3]`` pixels in 0..255 (``integer=False``).

    Raises:
      ValueError: wrong rank, channel count, empty, wrong dtype, or values outside 0..255 (value checks
        only when the array is concrete, not under ``jit``).
    """
    want = "uint8 [H, W, 3]" if integer else "float32 [H, W, 3] in 0..255"
    shape = getattr(image, "shape", None)
    dtype = getattr(image, "dtype", None)
    if shape is None or dtype is None:
        raise ValueError(f"{name} must be an array {want}, got {type(image).__name__}")
    if len(shape) != 3:
        raise ValueError(f"{name} must be {want} (one image; vmap for batches), got shape {tuple(shape)}")
    if shape[2] != 3:
        raise ValueError(f"{name} must be {want} (RGB, 3 channels), got shape {tuple(shape)}")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"{name} must be {want} with H, W >= 1, got shape {tuple(shape)}")
    kind = np.dtype(dtype).kind
    if integer and kind not in "ui":
        raise ValueError(f"{name} must be {want}, got dtype {np.dtype(dtype).name}")
    if not integer and kind not in "uif":
        raise ValueError(f"{name} must be {want}, got dtype {np.dtype(dtype).name}")
    if _is_concrete(image) and not (kind == "u" and np.dtype(dtype).itemsize == 1):
        arr = np.asarray(image)
        if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"{name} must be {want}: values must lie in 0..255, got {arr.min()}..{arr.max()}")
    return jnp.asarray(image)


# ---------------------------------------------------------------------------------------------------
# Geometry


def block_grid(height: int, width: int, subsampling: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((hb, wb) of luma, (hc, wc) of chroma)``: the block grids of an H x W image."""
    luma = (-(-height // 8), -(-width // 8))
    chroma = luma if subsampling == "444" else (-(-height // 16), -(-width // 16))
    return luma, chroma


def _pad_edge(plane, rows: int, cols: int):
    h, w = plane.shape
    return jnp.pad(plane, ((0, rows - h), (0, cols - w)), mode="edge")


def _sample_planes(ycc, subsampling: str, downsample_420):
    """YCbCr ``[H, W, 3]`` -> three edge-padded sample planes ``[8 hb, 8 wb]`` (libjpeg jcprepct).

    ``downsample_420`` is :func:`color.downsample_420_int` for the exact integer path (libjpeg's box
    average with alternating bias) or :func:`color.downsample_420` for the float, differentiable one.
    """
    h, w, _ = ycc.shape
    (hb, wb), (hc, wc) = block_grid(h, w, subsampling)
    y = _pad_edge(ycc[..., 0], 8 * hb, 8 * wb)
    if subsampling == "444":
        return [y] + [_pad_edge(ycc[..., k], 8 * hb, 8 * wb) for k in (1, 2)]
    out = [y]
    for k in (1, 2):
        full = _pad_edge(ycc[..., k], h + h % 2, 16 * wc)
        out.append(_pad_edge(downsample_420(full), 8 * hc, 8 * wc))
    return out


# ---------------------------------------------------------------------------------------------------
# Encoder


def _round_div(t, d):
    """jcdctmgr.c quantization: ``sign(t) * ((|t| + d // 2) // d)`` (round half away from zero)."""
    a = jnp.abs(t)
    return jnp.sign(t) * ((a + (d >> 1)) // d)


def _tables(quality: int):
    luma, chroma = tables.quant_tables(quality)
    return jnp.asarray(luma), jnp.asarray(chroma)


def _aan8():
    return jnp.asarray(dct.aan_scale(), jnp.float32)


def forward_dct(image, quality: int | None = None, *, dct_method: str = "islow", subsampling: str = "444",
                qt_luma=None, qt_chroma=None) -> ForwardDCT:
    """Unquantized coefficients of ``image`` exactly as libjpeg computes them (see :class:`ForwardDCT`).

    Args:
      image: uint8 ``[H, W, 3]`` RGB.
      quality: IJG quality 1..100 (static), or give ``qt_luma`` and ``qt_chroma`` (int32 ``[8, 8]``).
      dct_method: ``"islow"`` (Pillow, cjpeg default), ``"ifast"`` (ImageMagick at quality <= 90) or
        ``"float"``.
      subsampling: ``"444"`` or ``"420"``.

    Returns:
      :class:`ForwardDCT` with per-component ``ratio`` ``[hb, wb, 8, 8]`` and ``step`` ``[8, 8]``.
    """
    check_options(dct_method, subsampling)
    image = check_image(image)
    luma, chroma = _resolve_tables(quality, qt_luma, qt_chroma)
    planes = _sample_planes(color.rgb_to_ycc_int(image), subsampling, color.downsample_420_int)
    ratios, steps = [], []
    for t, qt in zip(_fdct_planes(planes, dct_method), (luma, chroma, chroma)):
        ratio, step = _ratio_and_step(t, qt, dct_method)
        ratios.append(ratio)
        steps.append(step)
    return ForwardDCT(tuple(ratios), tuple(steps))


def _resolve_tables(quality, qt_luma, qt_chroma):
    if quality is not None:
        if qt_luma is not None or qt_chroma is not None:
            raise ValueError("give either quality or (qt_luma, qt_chroma), not both")
        return _tables(quality)
    if qt_luma is None or qt_chroma is None:
        raise ValueError("give quality (1..100) or both qt_luma and qt_chroma (int32 [8, 8])")
    for name, t in (("qt_luma", qt_luma), ("qt_chroma", qt_chroma)):
        if tuple(jnp.shape(t)) != (8, 8):
            raise ValueError(f"{name} must be int32 [8, 8] (natural order), got shape {tuple(jnp.shape(t))}")
    return jnp.asarray(qt_luma, jnp.int32), jnp.asarray(qt_chroma, jnp.int32)


_FDCT = {"islow": dct.fdct_islow, "ifast": dct.fdct_ifast, "float": dct.fdct_float}


def _blockwise(fn, comps):
    """Apply a blockwise ``fn`` to the ``[hb, wb, 8, 8]`` blocks of all components in one call.

    One DCT over the concatenated blocks keeps the traced program (and compile time) a third of
    three separate calls; results are identical.
    """
    flat = jnp.concatenate([c.reshape(-1, 8, 8) for c in comps])
    out = fn(flat)
    sizes = np.cumsum([c.shape[0] * c.shape[1] for c in comps])[:-1]
    return [o.reshape(c.shape[:2] + o.shape[1:]) for o, c in zip(jnp.split(out, sizes), comps)]


def _fdct_planes(planes, dct_method):
    """Padded int32 sample planes -> libjpeg's raw forward DCT output per component."""
    return _blockwise(_FDCT[dct_method], [dct.blockify(p - 128) for p in planes])


def _ratio_and_step(t, qt, dct_method):
    qt = jnp.asarray(qt, jnp.int32)
    if dct_method == "islow":
        return t.astype(jnp.float32) / (8 * qt).astype(jnp.float32), qt.astype(jnp.float32)
    if dct_method == "ifast":
        d = _ifast_divisors(qt)
        step = d.astype(jnp.float32) / _aan8()
        return t.astype(jnp.float32) / d.astype(jnp.float32), step
    return t * _float_divisors(qt), qt.astype(jnp.float32)


def _ifast_divisors(qt):
    return (qt * jnp.asarray(tables.AAN_SCALES) + (1 << 10)) >> 11


@functools.lru_cache(maxsize=None)
def _float_divisor_table() -> np.ndarray:
    # float32 [256, 8, 8]: libjpeg's FLOAT reciprocals for every baseline table entry 1..255 (row 0 unused).
    q = np.broadcast_to(np.arange(256, dtype=np.float64)[:, None, None], (256, 8, 8)).copy()
    q[0] = 1.0
    return tables.float_divisors(q)


def _float_divisors(qt):
    """libjpeg's ``(float)(1 / (q * s_v * s_u * 8))`` computed in double (float32 ``[8, 8]``).

    A float32 computation can differ by an ulp, so baseline entries are looked up in a table computed in
    float64 with numpy (exact under ``jit`` too); entries above 255 fall back to float32.
    """
    qt = jnp.asarray(qt, jnp.int32)
    table = jnp.asarray(_float_divisor_table())
    looked_up = table[jnp.clip(qt, 1, 255), jnp.arange(8)[:, None], jnp.arange(8)[None, :]]
    fallback = (1.0 / (qt.astype(jnp.float32) * _aan8())).astype(jnp.float32)
    return jnp.where(qt <= 255, looked_up, fallback)


def quantize(fwd: ForwardDCT, dct_method: str = "islow") -> tuple[jax.Array, jax.Array, jax.Array]:
    """The integers libjpeg stores for unquantized coefficients ``fwd`` (int32 ``[hb, wb, 8, 8]`` each)."""
    out = []
    for r in fwd.ratio:
        if dct_method == "float":
            out.append(jnp.floor(r + jnp.float32(16384.5)).astype(jnp.int32) - 16384)
        else:
            out.append(round_half_away(r).astype(jnp.int32))
    return tuple(out)


def round_half_away(x):
    """Round to nearest, ties away from zero (libjpeg's integer quantizer), keeping float dtype."""
    return jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5)


def encode(image, quality: int | None = None, *, dct_method: str = "islow", subsampling: str = "444",
           qt_luma=None, qt_chroma=None) -> JpegCoefficients:
    """Encoder emulation: uint8 ``[H, W, 3]`` RGB -> quantized coefficients, bit-exact to libjpeg 6b.

    Args:
      image: uint8 ``[H, W, 3]`` RGB.
      quality: IJG quality factor 1..100 (static under jit), or pass both tables instead.
      dct_method: ``"islow"``, ``"ifast"`` or ``"float"`` (libjpeg ``JDCT_*``).
      subsampling: ``"444"`` (1x1 all components) or ``"420"`` (luma 2x2).
      qt_luma, qt_chroma: int32 ``[8, 8]`` tables (natural order) instead of ``quality``.

    Returns:
      :class:`JpegCoefficients`.

    Examples:
      >>> coeffs = jax.jit(encode, static_argnums=1, static_argnames=("dct_method", "subsampling"))(img, 90)
    """
    check_options(dct_method, subsampling)
    image = check_image(image)
    luma, chroma = _resolve_tables(quality, qt_luma, qt_chroma)
    planes = _sample_planes(color.rgb_to_ycc_int(image), subsampling, color.downsample_420_int)
    comps = []
    for t, qt in zip(_fdct_planes(planes, dct_method), (luma, chroma, chroma)):
        if dct_method == "islow":
            comps.append(_round_div(t, 8 * qt))
        elif dct_method == "ifast":
            comps.append(_round_div(t, _ifast_divisors(qt)))
        else:
            prod = t * _float_divisors(qt)
            comps.append(jnp.floor(prod + jnp.float32(16384.5)).astype(jnp.int32) - 16384)
    h, w, _ = image.shape
    return JpegCoefficients(*comps, qt_luma=luma, qt_chroma=chroma, height=h, width=w, subsampling=subsampling)


# ---------------------------------------------------------------------------------------------------
# Decoder


def dequantize(coeffs: JpegCoefficients) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``z * q`` per component: float32 ``[hb, wb, 8, 8]`` dequantized coefficients in DCT units."""
    return tuple((z * q).astype(jnp.float32) for z, q in zip(coeffs.components, coeffs.tables))


def _component_dims(height: int, width: int, subsampling: str, k: int) -> tuple[int, int]:
    if k == 0 or subsampling == "444":
        return height, width
    return -(-height // 2), -(-width // 2)


def decode(coeffs: JpegCoefficients, *, range_limit: str = "clamp"):
    """Decoder emulation (libjpeg-turbo / libjpeg 6b defaults): coefficients -> uint8 ``[H, W, 3]`` RGB.

    ``islow`` IDCT, ``h2v2_fancy_upsample`` for 4:2:0 chroma, fixed-point YCbCr -> RGB: bit-exact
    against Pillow (libjpeg-turbo with SIMD) and libjpeg 6b on real images.

    Args:
      coeffs: :class:`JpegCoefficients` (one image; ``vmap`` for batches).
      range_limit: ``"clamp"`` (default; libjpeg-turbo's SIMD IDCT, i.e. Pillow, browsers, ImageMagick
        on most systems) or ``"wrap"`` (the portable C code of libjpeg 6b/9: out-of-range IDCT outputs
        beyond +-512 wrap around). Identical unless the coefficients are far outside what an image
        produces; see :func:`qcamo_jax.jpeg.dct.idct_islow`. (libjpeg-turbo's SIMD also overflows its
        16-bit lanes for absurd coefficients; no emulation covers that.)
    """
    h, w, sub = coeffs.height, coeffs.width, coeffs.subsampling
    planes = []
    dequant = [jnp.asarray(z, jnp.int32) * jnp.asarray(q, jnp.int32) for z, q in zip(coeffs.components, coeffs.tables)]
    idct = functools.partial(dct.idct_islow, range_limit=range_limit)
    for k, blocks in enumerate(_blockwise(idct, dequant)):
        samples = dct.unblockify(blocks)
        ch, cw = _component_dims(h, w, sub, k)
        plane = samples[:ch, :cw]
        if k and sub == "420":
            plane = color.upsample_420_int(plane)[:h, :w]
        planes.append(plane)
    return color.ycc_to_rgb_int(jnp.stack(planes, axis=-1)).astype(jnp.uint8)


def decode_float(dequantized, *, height: int, width: int, subsampling: str = "444", clip: bool = False):
    """Differentiable decode: dequantized coefficients (DCT units) -> float32 pixels ``[H, W, 3]``.

    The smooth counterpart of :func:`decode`: orthonormal IDCT, level shift, triangle ("fancy")
    upsampling for 4:2:0 chroma, JFIF YCbCr -> RGB, all in float32 without rounding. It agrees with
    :func:`decode` to within 2 grey levels (4:4:4) or 3 (4:2:0), mean |diff| ~0.45, on photos at
    quality 90 with ``clip=True`` (the gap is the integer rounding of the exact decoder).

    Args:
      dequantized: ``(y, cb, cr)`` float ``[hb, wb, 8, 8]`` (block grids as in :class:`JpegCoefficients`),
        e.g. :func:`dequantize` output or ``z * qt`` with real-valued ``z``.
      height, width: image size in pixels (static).
      subsampling: ``"444"`` or ``"420"`` (static).
      clip: clamp the IDCT samples and the RGB result to 0..255, as libjpeg does (zero gradient
        outside). Without it the map is linear in the coefficients.
    """
    check_options("islow", subsampling)
    planes = []
    for k, blocks in enumerate(_blockwise(dct.idct, [jnp.asarray(c, jnp.float32) for c in dequantized])):
        samples = dct.unblockify(blocks) + 128.0
        if clip:  # libjpeg range-limits the IDCT output before upsampling and colour conversion
            samples = jnp.clip(samples, 0.0, 255.0)
        ch, cw = _component_dims(height, width, subsampling, k)
        plane = samples[:ch, :cw]
        if k and subsampling == "420":
            plane = color.upsample_420(plane)[:height, :width]
        planes.append(plane)
    rgb = color.ycc_to_rgb(jnp.stack(planes, axis=-1))
    return jnp.clip(rgb, 0.0, 255.0) if clip else rgb


def forward_dct_float(image, *, subsampling: str = "444"):
    """Differentiable encoder front end: float pixels ``[H, W, 3]`` -> float DCT coefficients (DCT units).

    Float JFIF colour conversion, edge padding, 2x2 box downsampling (4:2:0), orthonormal DCT; no
    rounding. Returns ``(y, cb, cr)`` float32 ``[hb, wb, 8, 8]`` on the same block grids as
    :func:`encode`. Divide by a quantization step to compare with :class:`ForwardDCT` ratios.
    """
    check_options("islow", subsampling)
    planes = _sample_planes(color.rgb_to_ycc(image), subsampling, color.downsample_420)
    return tuple(dct.dct(dct.blockify(p - 128.0)) for p in planes)


def roundtrip(image, quality: int, *, dct_method: str = "islow", subsampling: str = "444"):
    """Exact JPEG round trip: uint8 ``[H, W, 3]`` -> encode -> decode -> uint8 ``[H, W, 3]``."""
    return decode(encode(image, quality, dct_method=dct_method, subsampling=subsampling))
