"""Real photos for tests, from scikit-image's bundled data (BSD-licensed, installed offline).

``photo(name, (H, W))`` returns ``uint8 [H, W, 3]``: the photo resized to cover (H, W) then
centre-cropped, like the MediaEval 2020 test set was prepared.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

#: scikit-image bundled RGB photos (file names inside skimage/data).
PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left")


@functools.lru_cache(maxsize=None)
def _raw(name: str) -> np.ndarray:
    import skimage.data

    if name == "motorcycle_left":  # skimage ships it as the left image of a stereo pair
        arr = skimage.data.stereo_motorcycle()[0]
    elif hasattr(skimage.data, name):
        arr = getattr(skimage.data, name)()
    else:
        raise KeyError(name)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    return np.ascontiguousarray(arr[..., :3].astype(np.uint8))


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
