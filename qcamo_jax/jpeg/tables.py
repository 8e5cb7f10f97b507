"""JPEG quantization tables (IJG quality scaling) and the fixed-point scale tables of libjpeg's DCTs.

All tables are in **natural (row-major) order**: ``table[v, u]`` is the entry of vertical frequency
``v`` and horizontal frequency ``u`` (row 0 = the first row of the DCT block), never zig-zag order.

References:
  * ITU-T T.81 (JPEG), Annex K.1 (example luminance / chrominance tables).
  * IJG libjpeg 6b, ``jcparam.c`` (``jpeg_quality_scaling``, ``jpeg_add_quant_table``) and
    ``jcdctmgr.c`` (``aanscales``, ``aanscalefactor``: the per-coefficient scales of the AAN DCTs).
"""

from __future__ import annotations

import numpy as np

#: ITU-T T.81 Table K.1, luminance, natural order.
STD_LUMA = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.int32,
)

#: ITU-T T.81 Table K.2, chrominance, natural order.
STD_CHROMA = np.array(
    [
        [17, 18, 24, 47, 99, 99, 99, 99],
        [18, 21, 26, 66, 99, 99, 99, 99],
        [24, 26, 56, 99, 99, 99, 99, 99],
        [47, 66, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
    ],
    dtype=np.int32,
)

#: AAN scale factors s_0 = 1, s_k = sqrt(2) cos(k pi / 16): the AAN DCTs (ifast, float) return
#: ``8 * s_v * s_u * F[v, u]`` where ``F`` is the orthonormal (JPEG standard) DCT coefficient.
#: The values are libjpeg's decimal literals (jcdctmgr.c ``aanscalefactor``), so that the FLOAT
#: divisors round to the same float32 numbers as libjpeg's.
AAN_SCALE_FACTORS = np.array(
    [1.0, 1.387039845, 1.306562965, 1.175875602, 1.0, 0.785694958, 0.541196100, 0.275899379]
)

#: libjpeg's ``aanscales``: ``round(2**14 * s_v * s_u)``, int32 [8, 8] (jcdctmgr.c, IFAST divisors).
AAN_SCALES = np.array(
    [
        [16384, 22725, 21407, 19266, 16384, 12873, 8867, 4520],
        [22725, 31521, 29692, 26722, 22725, 17855, 12299, 6270],
        [21407, 29692, 27969, 25172, 21407, 16819, 11585, 5906],
        [19266, 26722, 25172, 22654, 19266, 15137, 10426, 5315],
        [16384, 22725, 21407, 19266, 16384, 12873, 8867, 4520],
        [12873, 17855, 16819, 15137, 12873, 10114, 6967, 3552],
        [8867, 12299, 11585, 10426, 8867, 6967, 4799, 2446],
        [4520, 6270, 5906, 5315, 4520, 3552, 2446, 1247],
    ],
    dtype=np.int32,
)


def check_quality(quality) -> int:
    """Validate a JPEG quality factor: an integer in 1..100 (returned as ``int``).

    Raises:
      ValueError: not an integer, or outside 1..100.
    """
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
        raise ValueError(f"JPEG quality must be an integer in 1..100 (a static argument under jit; or pass "
                         f"quantization tables), got {quality!r}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    return int(quality)


def quality_scaling(quality: int) -> int:
    """IJG ``jpeg_quality_scaling``: quality 1..100 -> percentage scale of the base tables."""
    q = check_quality(quality)
    return 5000 // q if q < 50 else 200 - 2 * q


def scale_table(base: np.ndarray, scale: int, force_baseline: bool = True) -> np.ndarray:
    """IJG ``jpeg_add_quant_table``: ``clamp((base * scale + 50) // 100, 1, 255 or 32767)``."""
    t = (np.asarray(base, np.int64) * int(scale) + 50) // 100
    return np.clip(t, 1, 255 if force_baseline else 32767).astype(np.int32)


def quant_tables(quality: int, force_baseline: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The IJG quantization tables of a quality factor, as libjpeg's ``jpeg_set_quality`` makes them.

    Args:
      quality: integer 1..100 (Pillow, ImageMagick and cjpeg all call ``jpeg_set_quality``).
      force_baseline: clamp entries to 1..255 (8-bit tables), as every common encoder does.

    Returns:
      ``(luma, chroma)``: int32 [8, 8] each, natural order, in units of the orthonormal DCT.

    Examples:
      >>> quant_tables(90)[0][0].tolist()
      [3, 2, 2, 3, 5, 8, 10, 12]
    """
    s = quality_scaling(quality)
    return scale_table(STD_LUMA, s, force_baseline), scale_table(STD_CHROMA, s, force_baseline)


def ifast_divisors(qt: np.ndarray) -> np.ndarray:
    """libjpeg 6b IFAST divisors: ``DESCALE(q * aanscales, 11)`` = ``(q * aanscales + 1024) >> 11``.

    The AAN integer DCT leaves ``8 * s_v * s_u`` in each output; libjpeg folds that factor into the
    divisor (jcdctmgr.c, ``JDCT_IFAST``: ``CONST_BITS - 3 = 11``). int32 [8, 8].
    """
    q = np.asarray(qt, np.int64)
    return ((q * AAN_SCALES + (1 << 10)) >> 11).astype(np.int32)


def float_divisors(qt: np.ndarray) -> np.ndarray:
    """libjpeg 6b FLOAT reciprocals ``(float)(1 / (q * s_v * s_u * 8))`` (computed in double). float32 [8, 8]."""
    q = np.asarray(qt, np.float64)
    return (1.0 / (q * np.outer(AAN_SCALE_FACTORS, AAN_SCALE_FACTORS) * 8.0)).astype(np.float32)


#: The legal range of an unquantized DCT coefficient of 8-bit samples, in DCT units (libjpeg 6b
#: ``jchuff.c``: "The legal range of a DCT coefficient is -1024 .. +1023 for 8-bit data"; ITU-T T.81
#: F.1.2.1 and Tables F.1 / F.2: baseline DC differences have magnitude categories 0..11, AC
#: coefficients 1..10).
DCT_RANGE = (-1024, 1023)
#: ``jchuff.c`` ``MAX_COEF_BITS = 10`` for 8-bit data: an AC coefficient needs at most 10 magnitude
#: bits, so ``|z| <= 1023`` (libjpeg stops with ``JERR_BAD_DCT_COEF`` otherwise).
MAX_AC = 1023


def coefficient_range(table):
    """The quantized integers ``z`` a baseline 8-bit JPEG can hold for each entry of a quantization table.

    ``z`` must be what libjpeg's quantizer (``jcdctmgr.c``: ``(|F| + q/2) / q`` with the sign put
    back) can make of a legal DCT value ``F`` in :data:`DCT_RANGE`, i.e.
    ``-((1024 + q // 2) // q) <= z <= (1023 + q // 2) // q``, and an AC coefficient also needs
    ``|z| <= 1023`` (:data:`MAX_AC`). With ``q = 1`` this is the Huffman coder's own limit (DC in
    -1024..1023, so any two DC values differ by at most 2047, the 11-bit category limit of T.81
    Table F.1; AC in -1023..1023). For larger ``q`` it is narrower: a coefficient outside it can
    never be written by an encoder reading 8-bit pixels, so re-encoding a decoded file could never
    give it back. Black 8x8 blocks reach the end of the range (DC ``-1024 / q``).

    Args:
      table: int ``[..., 8, 8]`` quantization table(s) (natural order, entries >= 1), numpy or jax;
        float arrays of integer values are accepted (the DCT quantizer keeps steps as float32).

    Returns:
      ``(lo, hi)``: arrays of ``table``'s shape and kind (numpy or jax), inclusive bounds; the DC
      entry is ``[..., 0, 0]``.
    """
    q = table
    lo = -((-DCT_RANGE[0] + q // 2) // q)
    hi = (DCT_RANGE[1] + q // 2) // q
    ac = (np.arange(64).reshape(8, 8) != 0)
    lo = lo + (lo < -MAX_AC) * ac * (-MAX_AC - lo)  # array-library agnostic max(lo, -1023) on AC entries
    hi = hi - (hi > MAX_AC) * ac * (hi - MAX_AC)
    return lo, hi
