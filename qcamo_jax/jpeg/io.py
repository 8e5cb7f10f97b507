"""JPEG files holding exactly given quantized coefficients (written and read through jpeglib).

The file is a baseline sequential JFIF/YCbCr JPEG written with libjpeg's transcoding API
(``jpeg_write_coefficients``, via jpeglib), so no DCT, colour conversion or rounding happens: the
integers of a :class:`~qcamo_jax.jpeg.codec.JpegCoefficients` are the integers in the file, and any
decoder sees them. Huffman tables are optimised by libjpeg (``+OPTIMIZE_CODING``, lossless), as
ImageMagick does.

jpeglib pitfalls handled here: ``from_dct`` sets the image size to (blocks x 8); we set the true
``height``/``width`` (otherwise every decoder shows the padding). We also set the sampling factors
explicitly (jpeglib infers them from block counts, which is ambiguous for tiny images) and always use
one libjpeg version for writing (``6b``; the coefficient path is identical in all versions).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from qcamo_jax.errors import ImageFileError, JpegCoefficientError
from qcamo_jax.fileio import atomic_write_bytes
from qcamo_jax.jpeg.tables import coefficient_range

#: libjpeg version used by jpeglib for writing/reading coefficient files.
LIBJPEG_VERSION = "6b"

_SAMP = {"444": ((1, 1), (1, 1), (1, 1)), "420": ((2, 2), (1, 1), (1, 1))}


def _check_coefficients(coeffs) -> list[np.ndarray]:
    from qcamo_jax.jpeg.codec import block_grid

    h, w, sub = coeffs.height, coeffs.width, coeffs.subsampling
    if sub not in _SAMP:
        raise JpegCoefficientError(f"subsampling must be '444' or '420', got {sub!r}")
    if not (1 <= h <= 65500 and 1 <= w <= 65500):
        raise JpegCoefficientError(f"JPEG size must be 1..65500 pixels per side, got {h}x{w}")
    for name, qt in (("qt_luma", coeffs.qt_luma), ("qt_chroma", coeffs.qt_chroma)):
        qt = np.asarray(qt)
        if qt.shape != (8, 8) or qt.min() < 1 or qt.max() > 255:
            raise JpegCoefficientError(f"{name} must be int [8, 8] with entries in 1..255 (baseline), got shape "
                                       f"{qt.shape}")
    # The widest range (table entry 1) is the Huffman coder's limit; see tables.coefficient_range.
    lo, hi = coefficient_range(np.ones((8, 8), np.int64))
    grids = block_grid(h, w, sub)
    comps = []
    for name, z, grid in zip(("y", "cb", "cr"), coeffs.components, (grids[0], grids[1], grids[1])):
        z = np.asarray(z)
        want = (*grid, 8, 8)
        if z.shape != want:
            raise JpegCoefficientError(f"coefficients {name} must be int [{want[0]}, {want[1]}, 8, 8] for a {h}x{w} "
                                       f"{sub} image, got shape {z.shape}")
        if z.dtype.kind not in "iu":
            raise JpegCoefficientError(f"coefficients {name} must be an integer array [hb, wb, 8, 8], got {z.dtype}")
        bad = (z < lo) | (z > hi)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise JpegCoefficientError(
                f"coefficients {name} out of the baseline range (AC in {lo[0, 1]}..{hi[0, 1]}, DC in {lo[0, 0]}.."
                f"{hi[0, 0]}): {int(bad.sum())} value(s), the first {int(z[where])} at block {where[:2]} "
                f"frequency {where[2:]}")
        comps.append(z.astype(np.int16))
    return comps


def jpeg_bytes(coeffs) -> bytes:
    """Serialize :class:`~qcamo_jax.jpeg.codec.JpegCoefficients` (one image, no batch axis) as JPEG bytes.

    Raises:
      JpegCoefficientError: (a ``ValueError``) wrong block grid for the image size, non-integer
        coefficients, coefficients outside :func:`qcamo_jax.jpeg.tables.coefficient_range` for table
        entry 1 (the format's limit), tables outside 1..255.
    """
    import jpeglib

    y, cb, cr = _check_coefficients(coeffs)
    qt = np.stack([np.asarray(coeffs.qt_luma), np.asarray(coeffs.qt_chroma)]).astype(np.uint16)
    with tempfile.TemporaryDirectory(prefix="qcamo_jpeg_") as tmp:
        path = os.path.join(tmp, "out.jpg")
        with jpeglib.version(LIBJPEG_VERSION):
            im = jpeglib.from_dct(y, cb, cr, qt=qt, quant_tbl_no=[0, 1, 1])
            im.height, im.width = int(coeffs.height), int(coeffs.width)
            im.samp_factor = np.array(_SAMP[coeffs.subsampling], dtype=np.int16)
            im.write_dct(path, flags=["+OPTIMIZE_CODING"])
        with open(path, "rb") as f:
            return f.read()


def write_jpeg(path: str | os.PathLike, coeffs) -> None:
    """Write a .jpg holding exactly ``coeffs`` (atomically, see :mod:`qcamo_jax.fileio`).

    Raises:
      JpegCoefficientError: as :func:`jpeg_bytes`, naming ``path``; nothing is written.
    """
    try:
        data = jpeg_bytes(coeffs)
    except JpegCoefficientError as exc:
        raise JpegCoefficientError(exc.message, path) from None
    atomic_write_bytes(path, data)


def read_jpeg_coefficients(path: str | os.PathLike):
    """Read the quantized coefficients of a baseline or progressive YCbCr JPEG.

    Returns:
      :class:`~qcamo_jax.jpeg.codec.JpegCoefficients` (numpy int32 arrays). Supported: 3 components with
      sampling 4:4:4 or 4:2:0 and one table shared by Cb and Cr.

    Raises:
      ImageFileError: unreadable, not a JPEG, grayscale/CMYK, or another sampling layout.
    """
    import jpeglib

    from qcamo_jax.jpeg.codec import JpegCoefficients

    path = os.fspath(path)
    try:
        with jpeglib.version(LIBJPEG_VERSION):
            d = jpeglib.read_dct(path)
            d.load()
    except Exception as exc:  # jpeglib raises IOError/RuntimeError/OSError with libjpeg's message
        raise ImageFileError(f"cannot read JPEG coefficients ({exc})", path) from None
    if d.Cb is None or d.Cr is None:
        raise ImageFileError("grayscale JPEG: expected 3 components (YCbCr)", path)
    samp = tuple(tuple(int(v) for v in s) for s in np.asarray(d.samp_factor)[:3])
    sub = {v: k for k, v in _SAMP.items()}.get(samp)
    if sub is None:
        raise ImageFileError(f"unsupported chroma sampling factors {samp} (need 4:4:4 or 4:2:0)", path)
    qt = np.asarray(d.qt)
    tbl = np.asarray(d.quant_tbl_no)
    if tbl[1] != tbl[2]:
        raise ImageFileError("Cb and Cr use different quantization tables (unsupported)", path)
    return JpegCoefficients(
        y=np.asarray(d.Y, np.int32),
        cb=np.asarray(d.Cb, np.int32),
        cr=np.asarray(d.Cr, np.int32),
        qt_luma=qt[tbl[0]].astype(np.int32),
        qt_chroma=qt[tbl[1]].astype(np.int32),
        height=int(d.height),
        width=int(d.width),
        subsampling=sub,
    )
