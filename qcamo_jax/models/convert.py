"""Convert published KonCept512 weights to the project's checkpoint format (one ``.safetensors`` file).

Two sources, two variants (see :mod:`qcamo_jax.models.koncept`):

* Keras ``.h5`` (KonIQ project, ``koncep512-trained-model.h5``) -> ``variant="keras"``; rules in
  :mod:`qcamo_jax.models.convert_keras`.
* PyTorch ``.pth`` (MediaEval 2020 Pixel Privacy task, ``KonCept512.pth``) -> ``variant="mediaeval"``;
  rules in :mod:`qcamo_jax.models.convert_torch`.

The format is detected from the file's first bytes (HDF5 signature; zip or pickle for PyTorch), falling
back on the extension only to word the error. The converted tree is checked against
``jax.eval_shape(module.init, ...)`` (every missing, extra and mis-shaped tensor is named) and written
atomically with :func:`qcamo_jax.models.checkpoint.save`, with metadata ``architecture="koncept512"``,
``config`` (variant, size), ``source_file``, ``source_sha256`` and ``converter_version``.

Example::

    from qcamo_jax.models import convert, hub
    report = convert.convert_file("koncep512-trained-model.h5", "koncept512.safetensors")
    model = hub.load_model("koncept512.safetensors")
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp

from qcamo_jax.errors import WeightFileError
from qcamo_jax.fileio import sha256_file
from qcamo_jax.models import checkpoint, koncept

CONVERTER_VERSION = "1"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class ConversionReport(NamedTuple):
    """What :func:`convert_file` wrote."""

    source: str
    destination: str
    variant: str
    n_params: int
    source_sha256: str
    sha256: str


def detect_format(path: str | os.PathLike) -> str:
    """``"keras"`` for an HDF5 file, ``"mediaeval"`` for a PyTorch file (zip or legacy pickle).

    Raises:
      WeightFileError: missing, empty, or neither format.
    """
    if not os.path.isfile(path):
        raise WeightFileError("no such weight file", path)
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise WeightFileError("empty file (0 bytes)", path)
    if head == HDF5_MAGIC:
        return "keras"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch.save zip archive / legacy pickle protocol 2+
        return "mediaeval"
    ext = Path(path).suffix.lower()
    expected = {".h5": "an HDF5 file", ".hdf5": "an HDF5 file", ".pth": "a PyTorch file", ".pt": "a PyTorch file"}
    raise WeightFileError(
        f"not {expected.get(ext, 'a Keras .h5 or PyTorch .pth file')} (unrecognised content)", path)


def template(variant: str, size: str = "full") -> dict:
    """``jax.eval_shape`` of the module's variables: the tree every converted file must fill."""
    module = koncept.build(variant, size)
    h, w = module.input_size
    return jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, h, w, 3), jnp.float32))


def convert_variables(path: str | os.PathLike) -> tuple[str, dict]:
    """Read ``path`` (``.h5`` or ``.pth``) -> ``(variant, checked variable tree of numpy float32)``."""
    variant = detect_format(path)
    tmpl = template(variant)
    if variant == "keras":
        from qcamo_jax.models import convert_keras

        variables = convert_keras.convert(path, tmpl)
    else:
        from qcamo_jax.models import convert_torch

        variables = convert_torch.convert(path, tmpl)
    return variant, checkpoint.check_against_template(variables, tmpl, path)


def convert_file(src: str | os.PathLike, dst: str | os.PathLike) -> ConversionReport:
    """Convert a KonCept512 ``.h5`` / ``.pth`` file to a qcamo checkpoint at ``dst`` (written atomically).

    Returns:
      a :class:`ConversionReport` (variant, parameter count, hashes of source and output).

    Raises:
      WeightFileError: a corrupt, truncated, unrelated or wrong-architecture source file.
    """
    variant, variables = convert_variables(src)
    source_sha = sha256_file(src)
    metadata = {
        "architecture": "koncept512",
        "config": json.dumps({"variant": variant, "size": "full"}, sort_keys=True),
        "name": f"koncept512-{variant}",
        "source_file": Path(src).name,
        "source_sha256": source_sha,
        "converter_version": CONVERTER_VERSION,
    }
    checkpoint.save(dst, variables, metadata)
    return ConversionReport(os.fspath(src), os.fspath(dst), variant, koncept.count_params(variables), source_sha,
                            sha256_file(dst))
