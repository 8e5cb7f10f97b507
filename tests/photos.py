"""Real photos for tests, from scikit-image's bundled data (BSD-licensed, installed offline).

``photo(name, (H, W))`` returns ``uint8 [H, W, 3]``: the photo resized to cover (H, W) then
centre-cropped, like the MediaEval 2020 test set was prepared.
"""

from __future__ import annotations

import functools
import os

import numpy as np
from PIL import Image

#: scikit-image bundled RGB photos (file names inside skimage/data).
PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left")


@functools.lru_cache(maxsize=None)
def _raw(name: str) -> np.ndarray:
    """Read skimage's bundled file directly: its loaders may go through pooch, which can stall offline."""
    import skimage.data

    folder = os.path.dirname(skimage.data.__file__)
    for ext in (".png", ".jpg"):
        path = os.path.join(folder, name + ext)
        if os.path.isfile(path):
            break
    else:
        raise KeyError(f"{name!r} is not bundled with scikit-image")
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(arr)


def photo(name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """A bundled photo as ``uint8 [H, W, 3]``; resized (cover) and centre-cropped to ``size``."""
    arr = _raw(name)
    if size is None:
        return arr.copy()
    h, w = size
    im = Image.fromarray(arr)
    scale = max(h / im.height, w / im.width)
    nh, nw = max(h, round(im.height * scale)), max(w, round(im.width * scale))
    im = im.resize((nw, nh), Image.BICUBIC)
    top, left = (nh - h) // 2, (nw - w) // 2
    return np.asarray(im.crop((left, top, left + w, top + h)), dtype=np.uint8)


def photos(size: tuple[int, int], names=PHOTO_NAMES) -> np.ndarray:
    """Several photos stacked: ``uint8 [N, H, W, 3]``."""
    return np.stack([photo(n, size) for n in names])
