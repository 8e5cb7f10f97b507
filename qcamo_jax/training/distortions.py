"""Synthetic distortions at graded levels, for one ``uint8 [H, W, 3]`` RGB image.

Each family is a list of levels ordered from mildest to strongest, so "level index" is a distortion
rank within its family. Every function returns ``uint8 [H, W, 3]`` (the distorted image is an 8-bit
picture, as a user would save it).

Families (level parameter in brackets):
  * ``blur``: Gaussian blur, reflect padding [sigma in pixels];
  * ``noise``: additive white Gaussian noise [sigma in pixel units 0-255];
  * ``jpeg``: Pillow/libjpeg at a quality factor, default 4:2:0 subsampling [quality];
  * ``contrast``: blend towards the mean grey level [remaining contrast factor];
  * ``brighten`` / ``darken``: add / subtract a constant with clipping [pixel units];
  * ``desaturate`` / ``oversaturate``: scale chroma around the luma [saturation factor].
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

#: Training levels, mildest first.
TRAIN_LEVELS: dict[str, tuple[float, ...]] = {
    "blur": (0.6, 1.0, 1.5, 2.2, 3.2, 4.5),
    "noise": (3.0, 6.0, 10.0, 16.0, 25.0, 40.0),
    "jpeg": (90, 70, 50, 30, 20, 12, 7),
    "contrast": (0.8, 0.6, 0.45, 0.3),
    "brighten": (30.0, 60.0, 90.0),
    "darken": (30.0, 60.0, 90.0),
    "desaturate": (0.5, 0.0),
    "oversaturate": (1.7, 2.6),
}

#: Held-out evaluation levels (issue 5's criteria: blur, noise, JPEG quality 10-30).
EVAL_LEVELS: dict[str, tuple[float, ...]] = {
    "blur": (1.0, 2.0, 3.0, 4.5),
    "noise": (5.0, 10.0, 20.0, 40.0),
    "jpeg": (30, 20, 10),
}

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    x = image.astype(np.float32)
    return _to_uint8(ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0), mode="reflect", truncate=4.0))


def noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return _to_uint8(image.astype(np.float32) + rng.normal(0.0, sigma, image.shape).astype(np.float32))


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def contrast(image: np.ndarray, factor: float) -> np.ndarray:
    x = image.astype(np.float32)
    mean = float(np.mean(x @ _LUMA))
    return _to_uint8(mean + factor * (x - mean))


def brightness(image: np.ndarray, delta: float) -> np.ndarray:
    return _to_uint8(image.astype(np.float32) + delta)


def saturation(image: np.ndarray, factor: float) -> np.ndarray:
    x = image.astype(np.float32)
    luma = (x @ _LUMA)[..., None]
    return _to_uint8(luma + factor * (x - luma))


def apply(image: np.ndarray, family: str, level: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Distort ``image`` (``uint8 [H, W, 3]``) by ``family`` at ``level``; ``rng`` is used by ``noise``."""
    if family == "blur":
        return blur(image, level)
    if family == "noise":
        return noise(image, level, rng if rng is not None else np.random.default_rng(0))
    if family == "jpeg":
        return jpeg(image, int(level))
    if family == "contrast":
        return contrast(image, level)
    if family == "brighten":
        return brightness(image, level)
    if family == "darken":
        return brightness(image, -level)
    if family in ("desaturate", "oversaturate"):
        return saturation(image, level)
    raise KeyError(f"unknown distortion family {family!r}")


def catalogue(levels: dict[str, tuple[float, ...]] = TRAIN_LEVELS) -> list[tuple[str, float, int]]:
    """``[("pristine", 0, 0), (family, level, rank), ...]``: index 0 is always the pristine image."""
    out = [("pristine", 0.0, 0)]
    for family, values in levels.items():
        out += [(family, float(v), i + 1) for i, v in enumerate(values)]
    return out
