"""The inputs of a run: which files are images to attack, and what reading them once tells.

Data contract: :func:`discover_inputs` turns what the user typed (files, folders, globs) into a list
of :class:`pathlib.Path`, in the order given, each file once; :data:`IMAGE_EXTENSIONS` is the one
definition of an image file name when a folder is searched. :func:`probe_input` reads one file and
returns JSON-able facts (SHA-256 hex, shape ``[H, W, 3]``, a one-line ``error`` or ``None``), which the
processes of a multi-host run exchange; :func:`load_input` reads the ``uint8 [H, W, 3]`` RGB pixels
again at attack time and raises :class:`qcamo_jax.errors.ImageFileError` if the file changed since.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from qcamo_jax import fileio, imageio
from qcamo_jax.errors import ImageFileError

#: File extensions picked up when a folder is given (case-insensitive). Files named explicitly are
#: always tried, whatever their extension.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".pbm"}
)


def _is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _walk_images(folder: Path, exclude: Path | None) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        rootp = Path(root)
        # Never descend into the output folder (a second run would attack its own outputs) or hidden folders.
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (exclude is None or _resolve(rootp / d) != exclude))
        found.extend(rootp / f for f in sorted(files) if not f.startswith(".") and _is_image_name(f))
    return found


def _resolve(p: Path) -> Path:
    try:
        return p.resolve()
    except OSError:
        return p.absolute()


def discover_inputs(specs: Sequence[str | os.PathLike], exclude: str | os.PathLike | None = None) -> list[Path]:
    """Expand files, folders and glob patterns into a de-duplicated list of input paths.

    * a folder: every file below it with an image extension (:data:`IMAGE_EXTENSIONS`), recursively,
      skipping hidden entries and ``exclude`` (the output folder);
    * a glob (``*``, ``?``, ``[``; ``**`` recursive): the matching files (folders are expanded as above);
    * anything else is kept as given, even if missing or not an image: it is then refused per file
      with a one-line reason, so a typo never silently drops an input.

    Args:
      specs: what the user typed.
      exclude: a folder never to read from (the output folder).

    Returns:
      Paths in the order given, folders' contents sorted, each file once (by resolved path).
    """
    exclude_p = _resolve(Path(exclude)) if exclude is not None else None
    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path):
        key = _resolve(p)
        if key not in seen:
            seen.add(key)
            out.append(p)

    for spec in specs:
        spec_s = os.fspath(spec)
        p = Path(spec_s)
        if p.is_dir():
            for f in _walk_images(p, exclude_p):
                add(f)
        elif not os.path.lexists(spec_s) and glob.has_magic(spec_s):
            for m in sorted(glob.glob(spec_s, recursive=True)):
                mp = Path(m)
                if mp.is_dir():
                    for f in _walk_images(mp, exclude_p):
                        add(f)
                elif exclude_p is None or exclude_p not in _resolve(mp).parents:
                    add(mp)
        else:
            add(p)
    return out


def probe_input(path: Path, min_size: Sequence[int]) -> dict[str, Any]:
    """What pass 1 learns about one input, as JSON-able data (processes exchange it).

    Returns:
      ``{"sha256": hex or None, "shape": [H, W, 3] or None, "error": one-line reason or None}``.
    """
    try:
        img = imageio.load_rgb(path)
        sha = fileio.sha256_file(path)
    except ImageFileError as exc:
        return {"sha256": None, "shape": None, "error": exc.message}
    except OSError as exc:  # raced away between the read and the hash
        return {"sha256": None, "shape": None, "error": f"cannot read ({exc.strerror or exc})"}
    (h, w), (min_h, min_w) = img.shape[:2], (int(s) for s in min_size)
    error = f"{w}x{h} pixels is smaller than the model's minimum {min_w}x{min_h}" if h < min_h or w < min_w else None
    return {"sha256": sha, "shape": list(img.shape), "error": error}


def load_input(path: Path, shape: Sequence[int], sha256_hex: str) -> np.ndarray:
    """The ``uint8 [H, W, 3]`` pixels of an input probed earlier, checked to be the file that was probed.

    Raises:
      ImageFileError: the file cannot be decoded, or its shape or SHA-256 differ from the probe's.
      OSError: the file cannot be read.
    """
    img = imageio.load_rgb(path)
    if img.shape != tuple(shape) or fileio.sha256_file(path) != sha256_hex:
        raise ImageFileError("changed while the run was going on", path)
    return img
