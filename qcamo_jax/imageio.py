"""Reading input images as ``uint8 [H, W, 3]`` sRGB, as a colour-managed viewer shows them.

Data contract: :func:`load_rgb` returns ``uint8 [H, W, 3]`` RGB pixels in sRGB, opaque; problems raise
:class:`qcamo_jax.errors.ImageFileError` (one line naming the file and the true reason); a file that
decodes with a repairable defect is read and an :class:`ImageFileWarning` (one line naming the file)
is issued through :mod:`warnings` (the CLI prints it as ``qcamo: warning: ...``).

How a file becomes those pixels (documented for users in README and docs/cli.md):

1. **EXIF orientation** is applied first.
2. **Depth from what the file declares, never from the pixel values** (:func:`declared_range`):
   8-bit modes as they are; 1-bit as 0/255; PNG 1/2/4-bit samples and PGM/PPM ``maxval`` < 255 are
   rescaled to 0..255 by Pillow's decoders; 16-bit samples (``I;16*``; 16-bit PNG/TIFF; PGM with
   ``maxval`` 256..65535, which Pillow rescales to 0..65535 in mode ``I``) become ``v >> 8``, the rule
   Pillow itself applies to 16-bit RGB PNG/TIFF, so grey and colour files of the same data agree;
   TIFF samples declared with fewer bits (``BitsPerSample`` < 16) use ``2**bits - 1`` as white;
   32-bit unsigned TIFF (``SampleFormat`` 1) uses ``2**32 - 1``; float samples (mode ``F``: TIFF
   ``SampleFormat`` 3, PFM) use the range the TIFF declares in ``SMinSampleValue`` /
   ``SMaxSampleValue`` (tags 340/341), else [0, 1], the convention of float image files. Refused,
   with the reason: signed integer samples (TIFF ``SampleFormat`` 2: no defined black and white),
   float samples outside their range or not finite (HDR: no tone mapping is guessed), mode ``I``
   from a format that declares no depth.
3. **Colour**: an embedded ICC profile is applied by LittleCMS (:mod:`PIL.ImageCms`) to convert to
   sRGB with the profile's own rendering intent, as colour-managed viewers do. A PNG ``gAMA`` chunk
   without ``sRGB``/``iCCP`` (PNG spec 11.3.3.2: those take precedence) is applied as libpng's
   ``png_set_gamma(2.2, file_gamma)`` does, ``out = 255 (v / 255) ** (1 / (2.2 gamma))``, unless
   that exponent is within libpng's 5 % ``PNG_GAMMA_THRESHOLD`` of 1; ``cHRM`` is ignored. A profile
   that is damaged or does not fit the pixels is ignored with a warning (viewers ignore it too).
   Other colour modes (palette, CMYK, YCbCr, LAB) are converted by Pillow.
4. **Transparency** (alpha bands, palette transparency, ``tRNS`` colour keys of grey and RGB PNGs)
   is composited over white, after the colour conversion, because the quality model sees opaque
   RGB and a JPEG holds no alpha.
5. **Damaged ancillary PNG chunks** (a bad CRC in ``tEXt``, ``zTXt``, ``iTXt``, ``tIME``...: any
   chunk whose first letter is lower case, PNG spec 5.4) are dropped with a warning, as libpng does
   by default (``png_crc_finish``: warn and discard ancillary chunks, error on critical ones). A bad
   CRC in a critical chunk (``IHDR``, ``PLTE``, ``IDAT``) and truncated files are refused.
   ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` stays False: it would skip those CRC checks but also fill
   truncated image data with black silently. Other refusals name Pillow's own reason (the plugin
   that recognises the file's first bytes is asked again, see :func:`why_unidentified`).

What the outputs carry: sRGB pixels and no profile (an untagged file is sRGB to every viewer), so
the attacked picture, the file written and the PSNR reported all describe what a viewer shows.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib

import numpy as np
from PIL import Image, ImageCms

from qcamo_jax.display import format_size
from qcamo_jax.errors import ImageFileError, ImageFileWarning  # noqa: F401 (ImageFileWarning: public here too)
from qcamo_jax.imagefile import load_failure, open_image

#: Pillow's decompression-bomb guard, made an error rather than a warning (pixels).
MAX_PIXELS = 89_478_485
#: libpng ``PNG_GAMMA_THRESHOLD``: a gamma correction whose exponent is within 5 % of 1 is skipped.
GAMMA_THRESHOLD = 0.05
#: The display gamma PNG's gAMA is corrected to (libpng's ``PNG_DEFAULT_sRGB`` screen gamma).
SCREEN_GAMMA = 2.2
_EXIF_ORIENTATION = 0x0112
#: EXIF orientation -> the transpose that shows the picture upright (Pillow's ImageOps.exif_transpose table).
_ORIENT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}
_TIFF_BITS, _TIFF_SAMPLE_FORMAT, _TIFF_SMIN, _TIFF_SMAX = 258, 339, 340, 341
#: Formats Pillow cannot read, recognised by their first bytes so the refusal says what they are.


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read ``path`` as ``uint8 [H, W, 3]`` sRGB (see the module docstring for every conversion).

    Raises:
      ImageFileError: missing, unreadable, zero-byte, truncated, damaged, not an image, an unsupported
        sample format, or too many pixels; the message says which.

    Warns:
      ImageFileWarning: a damaged ancillary PNG chunk was ignored, or an ICC profile could not be used.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ImageFileError("is a directory, not an image file", path)
    try:
        if os.path.getsize(path) == 0:
            raise ImageFileError("empty file (0 bytes)", path)
    except OSError as exc:
        raise ImageFileError(f"cannot read ({exc.strerror or exc})", path) from None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_image(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ImageFileError(
                        f"{format_size(im.width, im.height)} exceeds the decompression-bomb limit of {MAX_PIXELS:,} pixels", path
                    )
                fmt = im.format or "image"
                try:
                    im.load()
                except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
                    raise ImageFileError(load_failure(fmt, exc), path) from None
                orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
                # Depth and colour first: the file's TIFF tags and PNG chunks belong to the opened image.
                rgb = to_rgb_array(im, path)
        # Issued here, outside catch_warnings, so the usual once-per-message filter applies (a file read
        # twice by the pipeline is named once).
        for w in caught:
            warnings.warn(w.message, w.category, stacklevel=2)
        return _orient(rgb, orientation)
    except ImageFileError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageFileError(f"decompression bomb refused ({exc})", path) from None
    except OSError as exc:
        raise ImageFileError(f"cannot read ({exc.strerror or exc})", path) from None


def _orient(rgb: np.ndarray, orientation) -> np.ndarray:
    method = _ORIENT.get(orientation)
    return rgb if method is None else np.array(Image.fromarray(rgb).transpose(method), dtype=np.uint8)


def declared_range(im: Image.Image) -> tuple[float, float]:
    """Black and white levels of a single-band ``I;16*``, ``I`` or ``F`` image, from what its file declares.

    Returns:
      ``(black, white)`` in the units of ``np.asarray(im)`` (see the module docstring, rule 2).

    Raises:
      ValueError: signed integer samples, or mode ``I`` from a format that declares no depth (the
        message is the reason the file is refused).
    """
    tags = getattr(im, "tag_v2", None) if im.format == "TIFF" else None

    def first(tag):
        value = None if tags is None else tags.get(tag)
        return value[0] if isinstance(value, tuple) and value else value

    bits, sample_format = first(_TIFF_BITS), first(_TIFF_SAMPLE_FORMAT) or 1
    if sample_format == 2:
        raise ValueError(f"signed {bits or ''}-bit integer samples (TIFF SampleFormat 2) have no defined black and "
                         f"white level; save it as unsigned or 8/16-bit")
    if im.mode == "F":
        lo, hi = first(_TIFF_SMIN), first(_TIFF_SMAX)
        return (0.0, 1.0) if lo is None or hi is None or hi <= lo else (float(lo), float(hi))
    if im.mode.startswith("I;16"):
        return 0.0, float(2 ** bits - 1) if tags is not None and bits and bits < 16 else 65535.0
    if im.mode == "I":
        if tags is not None and bits == 32:
            return 0.0, float(2**32 - 1)
        if tags is not None and bits and bits <= 16:
            return 0.0, float(2**bits - 1)
        if im.format in ("PNG", "PPM"):  # 16-bit grey PNG (older Pillow) and PGM maxval > 255 (rescaled)
            return 0.0, 65535.0
        raise ValueError(f"32-bit integer samples from {im.format or 'this format'} declare no white level")
    raise ValueError(f"mode {im.mode} is not a single-band high-depth mode")


def _to_8bit(im: Image.Image) -> Image.Image:
    """``I;16*``, ``I`` or ``F`` -> ``L`` by the declared range (module docstring, rule 2)."""
    black, white = declared_range(im)
    arr = np.asarray(im)
    if im.mode == "I" and white == 2**32 - 1:
        arr = arr.view(np.uint32)  # Pillow reads unsigned 32-bit TIFF samples into int32
    if im.mode == "F":
        if not np.all(np.isfinite(arr)):
            raise ValueError("float samples include NaN or infinity")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < black or hi > white:
            raise ValueError(f"float samples span [{lo:g}, {hi:g}], outside their range [{black:g}, {white:g}] "
                             f"(high dynamic range: no tone mapping is guessed)")
    if white == 65535.0:
        out = arr.astype(np.uint32) >> 8  # Pillow's own 16 -> 8 bit rule for RGB;16 PNG and TIFF
    else:
        out = np.round((arr.astype(np.float64) - black) * 255.0 / (white - black))
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "L")


def _colour_key_alpha(im: Image.Image) -> np.ndarray | None:
    """``uint8 [H, W]`` alpha (0 where the pixel equals the tRNS colour key), or None without a key."""
    key = im.info.get("transparency")
    if key is None or im.mode not in ("1", "L", "RGB", "I", "I;16", "I;16B", "I;16L", "I;16N"):
        return None
    if isinstance(key, bytes):  # a tRNS chunk Pillow could not parse as a key
        return None
    arr = np.asarray(im)
    if im.mode == "1":
        arr = arr.astype(np.uint8)
    key = np.asarray(key)
    hit = np.all(arr == key, axis=-1) if arr.ndim == 3 else arr == key
    return np.where(hit, 0, 255).astype(np.uint8)


def _to_srgb(im: Image.Image, info: dict, path: str | None) -> Image.Image:
    """Colour bands (L, RGB, CMYK, ...) -> RGB in sRGB: ICC profile, else PNG gAMA, else Pillow."""
    icc = info.get("icc_profile")
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            intent = ImageCms.getDefaultIntent(src)
            return ImageCms.profileToProfile(im, src, _srgb_profile(), renderingIntent=intent, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
            warnings.warn(ImageFileWarning(f"{path or 'image'}: embedded ICC profile ignored "
                                           f"({' '.join(str(exc).split())}): pixels read as sRGB"), stacklevel=2)
    gamma = info.get("gamma")
    if gamma and "srgb" not in info and im.mode in ("L", "RGB"):
        exponent = 1.0 / (SCREEN_GAMMA * float(gamma))
        if abs(exponent - 1.0) > GAMMA_THRESHOLD:
            lut = np.round(255.0 * (np.arange(256) / 255.0) ** exponent).astype(np.uint8)
            im = im.point(lut.tolist() * len(im.getbands()))
    return im if im.mode == "RGB" else im.convert("RGB")


_SRGB = None


def _srgb_profile():
    global _SRGB
    if _SRGB is None:
        _SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return _SRGB


def to_rgb_array(im: Image.Image, path: str | None = None) -> np.ndarray:
    """Any Pillow image -> ``uint8 [H, W, 3]`` sRGB, opaque (module docstring, rules 2-4).

    Args:
      im: an opened, loaded Pillow image (its ``info`` and TIFF tags are read).
      path: for messages only.

    Raises:
      ImageFileError: a sample format whose meaning the file does not declare (``path`` named).
    """
    info = dict(im.info)
    alpha = None
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in info else "RGB")
    elif im.mode == "PA":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "RGBa", "La"):
        if im.mode in ("RGBa", "La"):
            im = im.convert("RGBA" if im.mode == "RGBa" else "LA")
        alpha = np.asarray(im.getchannel("A"))
        im = im.convert("RGB" if im.mode == "RGBA" else "L")
    else:
        alpha = _colour_key_alpha(im)
    try:
        if im.mode in ("I", "F") or im.mode.startswith("I;16"):
            im = _to_8bit(im)
    except ValueError as exc:
        raise ImageFileError(f"unsupported samples: {exc}", path) from None
    if im.mode == "1":
        im = im.convert("L")
    if im.mode not in ("L", "RGB", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        raise ImageFileError(f"unsupported pixel mode {im.mode}", path)
    im = _to_srgb(im, info, path)
    rgb = np.array(im, dtype=np.uint8)
    if alpha is not None and alpha.min(initial=255) < 255:
        rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = np.array(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)
    return rgb
