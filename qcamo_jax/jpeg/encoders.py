"""Real JPEG encoders, one registry: ``ENCODERS[name](image, quality) -> Encoded``.

Used to check the JAX codec against the encoders people use and by ``qcamo evaluate`` to measure
whether an attack survives re-compression. Every encoder takes ``uint8 [H, W, 3]`` RGB pixels (what a
PNG holds) and an IJG quality 1..100, and returns the JPEG bytes, the pixels Pillow decodes from them
(libjpeg-turbo, islow IDCT, fancy upsampling: what a typical viewer or data loader sees) and the stored
coefficients.

Registry names:
  ``imagemagick``          ``convert x.png -quality Q y.jpg`` (ImageMagick 6/7, whatever libjpeg it
                           links). IM picks the DCT and the sampling itself: IFAST for Q <= 90, ISLOW
                           above; 4:2:0 for Q < 90, 4:4:4 for Q >= 90 (measured, see docs/jpeg.md).
                           Raises :class:`EncoderUnavailable` if ``convert`` is missing or not ImageMagick.
  ``pillow-444``, ``pillow-420``  Pillow ``save(quality=Q, subsampling=0 / 2)``: ISLOW, Pillow's
                           bundled libjpeg(-turbo).
  ``libjpeg{V}-{dct}-{sub}`` jpeglib with libjpeg V in {6b, 9f, turbo210}, dct in {islow, ifast, float},
                           sub in {444, 420}; e.g. ``libjpeg6b-ifast-444``.
  ``mozjpeg-444``, ``mozjpeg-420``  jpeglib's bundled mozjpeg 4.0.3 with its defaults (trellis
                           quantization, its own tables, progressive): for evaluation only, it has no
                           exact emulation (see :mod:`qcamo_jax.jpeg.reencoders`).

:func:`encode_file` re-encodes a file instead of pixels (ImageMagick reads the file itself, so a JPEG
input keeps IM's own behaviour for JPEG inputs).
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import subprocess
import tempfile
from typing import Callable, NamedTuple

import numpy as np

from qcamo_jax.jpeg.tables import check_quality

#: jpeglib names of the libjpeg builds exposed in the registry (libjpeg 6b, 9f, libjpeg-turbo 2.1).
LIBJPEG_VERSIONS = ("6b", "9f", "turbo210")
#: jpeglib name of the bundled mozjpeg build.
MOZJPEG_VERSION = "mozjpeg403"


class EncoderUnavailable(RuntimeError):
    """The encoder's program or library is not installed here."""


class Encoded(NamedTuple):
    """Output of one real encoder.

    Attributes:
      data: the JPEG file's bytes.
      pixels: uint8 ``[H, W, 3]`` RGB, Pillow's decode of ``data``.
      coefficients: :class:`~qcamo_jax.jpeg.codec.JpegCoefficients` (numpy), or ``None`` when the file
        is not a 3-component 4:4:4/4:2:0 YCbCr JPEG (e.g. ImageMagick writes grayscale for gray images).
    """

    data: bytes
    pixels: np.ndarray
    coefficients: object


def _check_input(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
    return image


def _result(data: bytes) -> Encoded:
    from PIL import Image

    from qcamo_jax.errors import ImageFileError
    from qcamo_jax.jpeg.io import read_jpeg_coefficients

    with Image.open(io.BytesIO(data)) as im:
        pixels = np.asarray(im.convert("RGB"), dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="qcamo_enc_") as tmp:
        path = os.path.join(tmp, "x.jpg")
        with open(path, "wb") as f:
            f.write(data)
        try:
            coefs = read_jpeg_coefficients(path)
        except ImageFileError:
            coefs = None
    return Encoded(data, pixels, coefs)


# ---------------------------------------------------------------------------------------------------
# ImageMagick


@functools.lru_cache(maxsize=None)
def imagemagick_convert() -> str | None:
    """Path of ImageMagick's ``convert`` (or ``magick``), or ``None`` if absent or not ImageMagick."""
    for name in ("convert", "magick"):
        exe = shutil.which(name)
        if exe is None:
            continue
        try:
            out = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        if "ImageMagick" in out:
            return exe
    return None


def _run_imagemagick(src: str, quality: int) -> bytes:
    exe = imagemagick_convert()
    if exe is None:
        raise EncoderUnavailable("ImageMagick (convert) is not installed")
    with tempfile.TemporaryDirectory(prefix="qcamo_im_") as tmp:
        dst = os.path.join(tmp, "out.jpg")
        proc = subprocess.run([exe, src, "-quality", str(quality), dst], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"ImageMagick failed ({proc.returncode}): {proc.stderr.strip()[:500]}")
        with open(dst, "rb") as f:
            return f.read()


def imagemagick(image, quality: int) -> Encoded:
    """``convert x.png -quality Q y.jpg`` on the pixels of ``image`` (uint8 [H, W, 3])."""
    from PIL import Image

    image, quality = _check_input(image), check_quality(quality)
    with tempfile.TemporaryDirectory(prefix="qcamo_im_") as tmp:
        src = os.path.join(tmp, "in.png")
        Image.fromarray(image).save(src)
        return _result(_run_imagemagick(src, quality))


# ---------------------------------------------------------------------------------------------------
# Pillow


def pillow(image, quality: int, *, subsampling: str = "444") -> Encoded:
    """Pillow ``Image.save(format="JPEG", quality=Q, subsampling=0 (4:4:4) or 2 (4:2:0))``."""
    from PIL import Image

    image, quality = _check_input(image), check_quality(quality)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, subsampling={"444": 0, "420": 2}[subsampling])
    return _result(buf.getvalue())


# ---------------------------------------------------------------------------------------------------
# libjpeg builds through jpeglib


def libjpeg(image, quality: int, *, version: str = "6b", dct_method: str = "islow",
            subsampling: str = "444") -> Encoded:
    """Encode with a libjpeg build bundled in jpeglib (``jpeg_set_quality(Q)``, the given DCT and sampling)."""
    import jpeglib

    image, quality = _check_input(image), check_quality(quality)
    method = {"islow": jpeglib.JDCT_ISLOW, "ifast": jpeglib.JDCT_IFAST, "float": jpeglib.JDCT_FLOAT}[dct_method]
    samp = ((1, 1), (1, 1), (1, 1)) if subsampling == "444" else ((2, 2), (1, 1), (1, 1))
    with tempfile.TemporaryDirectory(prefix="qcamo_lj_") as tmp:
        dst = os.path.join(tmp, "out.jpg")
        try:
            ctx = jpeglib.version(version)
        except Exception as exc:  # pragma: no cover - depends on the jpeglib build
            raise EncoderUnavailable(f"jpeglib has no libjpeg {version}: {exc}") from None
        with ctx:
            im = jpeglib.from_spatial(np.ascontiguousarray(image))
            im.samp_factor = np.array(samp, dtype=np.int16)
            im.write_spatial(dst, qt=quality, dct_method=method)
        with open(dst, "rb") as f:
            return _result(f.read())


# ---------------------------------------------------------------------------------------------------
# Registry

Encoder = Callable[[np.ndarray, int], Encoded]

ENCODERS: dict[str, Encoder] = {
    "imagemagick": imagemagick,
    "pillow-444": functools.partial(pillow, subsampling="444"),
    "pillow-420": functools.partial(pillow, subsampling="420"),
}
for _v in LIBJPEG_VERSIONS:
    for _m in ("islow", "ifast", "float"):
        for _s in ("444", "420"):
            ENCODERS[f"libjpeg{_v}-{_m}-{_s}"] = functools.partial(libjpeg, version=_v, dct_method=_m, subsampling=_s)
del _v, _m, _s
for _s in ("444", "420"):
    ENCODERS[f"mozjpeg-{_s}"] = functools.partial(libjpeg, version=MOZJPEG_VERSION, dct_method="islow", subsampling=_s)
del _s


def available(name: str) -> bool:
    """Whether encoder ``name`` can run here (only ImageMagick depends on an external program)."""
    if name not in ENCODERS:
        raise KeyError(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)}")
    return name != "imagemagick" or imagemagick_convert() is not None


def encode_file(name: str, path: str | os.PathLike, quality: int) -> Encoded:
    """Re-encode an image file with encoder ``name``.

    ImageMagick reads ``path`` itself (so its own rules for JPEG inputs apply); the others get the pixels
    from :func:`qcamo_jax.imageio.load_rgb`.
    """
    if name == "imagemagick":
        return _result(_run_imagemagick(os.fspath(path), check_quality(quality)))
    from qcamo_jax.imageio import load_rgb

    return ENCODERS[name](load_rgb(path), quality)
