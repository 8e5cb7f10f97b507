"""Reading input images as ``uint8 [H, W, 3]`` RGB, with one-line errors naming the file.

How odd inputs become RGB (documented for users in README):
  * EXIF orientation is applied first (the pixels a viewer shows are the pixels attacked);
  * grayscale (L, I;16, I, F), palette (P), CMYK, YCbCr, LAB are converted to RGB by Pillow;
  * 16-bit images are scaled to 8 bits (v >> 8 for 16-bit integers);
  * alpha (RGBA, LA, PA, P with transparency) is composited over white, because the quality model sees
    opaque RGB and a JPEG cannot hold alpha.
Problems raise :class:`qcamo_jax.errors.ImageFileError`.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps

from qcamo_jax.display import format_size
from qcamo_jax.errors import ImageFileError

#: Pillow's decompression-bomb guard, made an error rather than a warning (pixels).
MAX_PIXELS = 89_478_485


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read ``path`` as ``uint8 [H, W, 3]`` RGB (see module docstring for the conversions).

    Raises:
      ImageFileError: missing, unreadable, zero-byte, truncated, not an image, or too many pixels.
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
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ImageFileError(
                        f"{format_size(im.width, im.height)} exceeds the decompression-bomb limit of {MAX_PIXELS:,} pixels", path
                    )
                im.load()
                im = ImageOps.exif_transpose(im)
                return to_rgb_array(im)
    except ImageFileError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageFileError(f"decompression bomb refused ({exc})", path) from None
    except Image.UnidentifiedImageError:
        raise ImageFileError("not an image (format not recognised)", path) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageFileError(f"cannot decode image ({exc})", path) from None


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """Any Pillow image -> ``uint8 [H, W, 3]`` RGB (alpha over white, 16-bit scaled to 8 bits)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(im, dtype=np.uint16)
        im = Image.fromarray((arr >> 8).astype(np.uint8), "L")
    elif im.mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if arr.max(initial=0) > 255 else 255.0
        im = Image.fromarray(np.clip(np.round(arr * 255.0 / hi), 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.array(im, dtype=np.uint8)
