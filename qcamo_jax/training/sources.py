"""Freely licensed source photos for the default model, installed offline, and their splits.

Two origins, both installable without any web download beyond the Debian archive:

* scikit-image's bundled images (BSD-3-Clause package; each picture's terms are in the docstring of
  its ``skimage.data`` function: astronaut, rocket, hubble_deep_field = public domain (NASA, SpaceX);
  chelsea, coffee, camera, grass, gravel, brick, retina = CC0; immunohistochemistry = "no known
  copyright restrictions"). ``moon`` is not used: its docstring states no licence.
* Debian packages fetched with ``apt-get download`` and unpacked with ``dpkg -x`` into a cache folder:
  ``mate-backgrounds`` (GPL-2+, nature photographs) and ``ukui-wallpapers`` (CC-BY-SA-3.0, digital
  art). The licences were read in each package's ``usr/share/doc/<pkg>/copyright``.

The split is by SOURCE picture, fixed here (not drawn at random) so that the held-out photos are the
same for every seed: the four scikit-image photos that the test suite uses (``tests/photos.py``) and
three MATE photographs and one UKUI picture are never seen in training.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

#: (H, W) of every prepared view; the MediaEval 2020 crop and the model's ``input_size``.
VIEW_SIZE = (384, 512)


@dataclasses.dataclass(frozen=True)
class Source:
    """One source picture.

    Attributes:
      name: unique id (``origin:file``).
      origin: ``skimage`` or a Debian package name.
      locator: ``skimage.data`` function name, or the file path inside the unpacked package.
      licence: SPDX-like licence of the picture.
      split: ``train`` or ``heldout``.
    """

    name: str
    origin: str
    locator: str
    licence: str
    split: str


DEBIAN_PACKAGES = ("mate-backgrounds", "ukui-wallpapers")

_MATE = "usr/share/backgrounds/mate"
_UKUI = "usr/share/backgrounds"
_HELDOUT_MATE = {"LadyBird", "Storm", "Dune"}
_HELDOUT_UKUI = {"goldfish"}
_MATE_PHOTOS = (
    "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Storm",
    "TwoWings", "Wood", "YellowFlower",
)
_UKUI_PICTURES = (
    "2004default.jpg", "calla.png", "city.png", "desert.png", "firstgeneration.jpg", "fluent-color.png",
    "focal-ubuntukylin.png", "goldfish.png", "rhythm.jpg", "rollpaper.png", "string.jpg", "the-mouse.jpg",
)
# scikit-image: held-out = the photos of tests/photos.py that exist in the installed version
# (``cat`` is the same picture as ``chelsea`` and is not used at all).
_SKIMAGE_HELDOUT = ("astronaut", "chelsea", "coffee", "rocket")
_SKIMAGE_TRAIN = ("camera", "grass", "gravel", "brick", "hubble_deep_field", "immunohistochemistry", "retina")
_SKIMAGE_LICENCE = {
    "astronaut": "public-domain (NASA)", "chelsea": "CC0-1.0", "coffee": "CC0-1.0", "rocket": "public-domain (SpaceX)",
    "camera": "CC0-1.0", "grass": "CC0-1.0", "gravel": "CC0-1.0", "brick": "CC0-1.0",
    "hubble_deep_field": "public-domain (NASA)", "immunohistochemistry": "no known copyright restrictions",
    "retina": "CC0-1.0",
}


def all_sources() -> list[Source]:
    """Every source picture with its licence and split, in a fixed order."""
    out = [Source(f"skimage:{n}", "skimage", n, _SKIMAGE_LICENCE[n], "heldout") for n in _SKIMAGE_HELDOUT]
    out += [Source(f"skimage:{n}", "skimage", n, _SKIMAGE_LICENCE[n], "train") for n in _SKIMAGE_TRAIN]
    out += [
        Source(f"mate-backgrounds:{n}", "mate-backgrounds", f"{_MATE}/nature/{n}.jpg", "GPL-2+",
               "heldout" if n in _HELDOUT_MATE else "train")
        for n in _MATE_PHOTOS
    ]
    out.append(Source("mate-backgrounds:Elephants", "mate-backgrounds", f"{_MATE}/abstract/Elephants.jpg", "GPL-2+", "train"))
    out += [
        Source(f"ukui-wallpapers:{Path(n).stem}", "ukui-wallpapers", f"{_UKUI}/{n}", "CC-BY-SA-3.0",
               "heldout" if Path(n).stem in _HELDOUT_UKUI else "train")
        for n in _UKUI_PICTURES
    ]
    return out


def fetch_debian(cache: str | os.PathLike, packages=DEBIAN_PACKAGES) -> dict[str, str]:
    """``apt-get download`` + ``dpkg -x`` each package into ``cache/debian`` (once).

    Returns:
      ``{package: deb file name}`` (the file name carries the exact version used).
    """
    root = Path(cache) / "debian"
    root.mkdir(parents=True, exist_ok=True)
    debs = {}
    for pkg in packages:
        found = sorted(glob.glob(str(root / f"{pkg}_*.deb")))
        if not found:
            subprocess.run(["apt-get", "download", pkg], cwd=root, check=True, capture_output=True)
            found = sorted(glob.glob(str(root / f"{pkg}_*.deb")))
        if not found:
            raise RuntimeError(f"apt-get download {pkg} produced no .deb in {root}")
        deb = found[-1]
        target = root / pkg
        if not (target / "usr").is_dir():
            subprocess.run(["dpkg", "-x", deb, str(target)], check=True)
        debs[pkg] = os.path.basename(deb)
    return debs


def load_source(source: Source, cache: str | os.PathLike) -> np.ndarray:
    """The source picture as ``uint8 [H, W, 3]`` RGB (grey pictures are replicated to 3 channels)."""
    if source.origin == "skimage":
        import skimage.data

        arr = getattr(skimage.data, source.locator)()
    else:
        path = Path(cache) / "debian" / source.origin / source.locator
        Image.MAX_IMAGE_PIXELS = None  # trusted, packaged wallpapers of up to ~18 Mpixel
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return np.ascontiguousarray(arr[..., :3].astype(np.uint8))


def cover_crop(image: np.ndarray, size=VIEW_SIZE, box=None) -> np.ndarray:
    """Resize (Lanczos) so ``image`` (or its ``box`` = (top, left, h, w)) covers ``size``; centre-crop.

    Like the MediaEval 2020 preparation and ``tests/photos.py`` (which uses bicubic).
    """
    h, w = size
    im = Image.fromarray(image)
    if box is not None:
        top, left, bh, bw = box
        im = im.crop((left, top, left + bw, top + bh))
    scale = max(h / im.height, w / im.width)
    nh, nw = max(h, round(im.height * scale)), max(w, round(im.width * scale))
    im = im.resize((nw, nh), Image.LANCZOS)
    top, left = (nh - h) // 2, (nw - w) // 2
    return np.asarray(im.crop((left, top, left + w, top + h)), dtype=np.uint8)


def views(image: np.ndarray, n_zoom: int, rng: np.random.Generator, size=VIEW_SIZE) -> list[np.ndarray]:
    """The full-frame view plus up to ``n_zoom`` random zoomed views, each ``uint8 [*size, 3]``.

    Zoomed views crop a random window of 1/1.5 to 1/3 of the picture's width (never smaller than
    ``size``, so nothing is upsampled and a pristine view stays sharp) and downscale it to ``size``.
    """
    out = [cover_crop(image, size)]
    h, w = size
    H, W = image.shape[:2]
    max_scale = min(H / h, W / w)  # how much larger than `size` the biggest same-aspect window is
    if max_scale < 1.5:
        return out
    for _ in range(n_zoom):
        s = rng.uniform(max(1.0, max_scale / 3.0), max_scale / 1.5)
        bh, bw = int(round(h * s)), int(round(w * s))
        top = int(rng.integers(0, H - bh + 1))
        left = int(rng.integers(0, W - bw + 1))
        out.append(cover_crop(image, size, box=(top, left, bh, bw)))
    return out
