"""The inputs of a run: which files are images to attack, and what reading them once tells.

Data contract: :func:`discover_inputs` (from :mod:`qcamo_jax.discovery`, the one definition of an image
file for every command) turns what the user typed (files, folders, globs) into a list of
:class:`pathlib.Path`, in the order given, each file once. :func:`probe_input` reads one file and
returns JSON-able facts (SHA-256 hex, shape ``[H, W, 3]``, a one-line ``error`` or ``None``), which the
processes of a multi-host run exchange; :func:`load_input` reads the ``uint8 [H, W, 3]`` RGB pixels
again at attack time and raises :class:`qcamo_jax.errors.ImageFileError` if the file changed since.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from qcamo_jax import fileio, imageio
from qcamo_jax.display import format_size
from qcamo_jax.discovery import discover_inputs  # noqa: F401 (the one definition, re-exported for the pipeline)
from qcamo_jax.errors import ImageFileError

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
    error = (f"{format_size(w, h)} is smaller than the model's minimum {format_size(min_w, min_h)}"
             if h < min_h or w < min_w else None)
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
