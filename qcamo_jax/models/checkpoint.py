"""The project's one weight-file format: safetensors with the variable tree flattened by '/'.

A checkpoint holds a Flax variable tree (``{"params": ..., "batch_stats": ...}``) and string metadata.
Keys are paths such as ``params/stem/conv2d_1a/kernel``. Metadata always has:

  * ``architecture``: a key of :data:`qcamo_jax.models.hub.ARCHITECTURES` (e.g. ``koncept512``);
  * ``config``: JSON of the keyword arguments that rebuild the module (e.g. ``{"variant": "keras"}``);
  * ``format_version``; and, for converted files, ``source_file``, ``source_sha256``,
    ``converter_version``.

safetensors was chosen because it stores no code (unlike pickle), is memory-mappable, and carries a
string-to-string metadata header that holds the provenance.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np

from qcamo_jax.errors import WeightFileError
from qcamo_jax.fileio import atomic_write_bytes

FORMAT_VERSION = "1"
SEP = "/"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dict of arrays -> ``{"a/b/c": array}``."""
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        if SEP in key:
            raise ValueError(f"variable name {key!r} contains {SEP!r}")
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + SEP))
        else:
            flat[name] = np.asarray(value)
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a/b/c": array}`` -> nested dict of arrays."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(SEP)
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def save(path: str | os.PathLike, variables: Mapping[str, Any], metadata: Mapping[str, str]) -> None:
    """Write ``variables`` and ``metadata`` to ``path`` atomically.

    Args:
      path: destination ``.safetensors`` file.
      variables: Flax variable tree (arrays of any float dtype are stored as they are).
      metadata: must contain ``architecture`` and ``config`` (a JSON string).

    Raises:
      ValueError: ``architecture`` or ``config`` missing, or ``metadata["form"] == "inference"``: the
        variables of a model's inference form (what ``hub.load_model`` gives by default) do not fit the
        architecture's checkpoint layout; save ``hub.load_model(..., inference=False)``'s instead.
    """
    from safetensors.numpy import save as st_save

    for required in ("architecture", "config"):
        if required not in metadata:
            raise ValueError(f"checkpoint metadata needs {required!r}")
    if metadata.get("form") == "inference":
        raise ValueError("these are the variables of the model's inference form (batch norms folded), which no "
                         "checkpoint holds; save the standard form: hub.load_model(..., inference=False)")
    json.loads(metadata["config"])
    meta = {"format_version": FORMAT_VERSION, **{k: str(v) for k, v in metadata.items()}}
    flat = {k: np.ascontiguousarray(jax.device_get(v)) for k, v in flatten(variables).items()}
    atomic_write_bytes(path, st_save(flat, metadata=meta))


def load_raw(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a checkpoint's flat arrays and metadata, with a one-line error on any problem."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise WeightFileError("no such weight file", path)
    try:
        with safe_open(os.fspath(path), framework="numpy") as f:
            metadata = dict(f.metadata() or {})
        with open(path, "rb") as f:
            flat = st_load(f.read())
    except (SafetensorError, OSError, ValueError, Exception) as exc:  # safetensors raises varied types
        raise WeightFileError(f"not a readable qcamo weight file ({type(exc).__name__}: {exc})", path) from None
    if "architecture" not in metadata or "config" not in metadata:
        raise WeightFileError("safetensors file without qcamo metadata (architecture, config)", path)
    return flat, metadata


def check_against_template(
    variables: Mapping[str, Any], template: Mapping[str, Any], source: str | os.PathLike
) -> dict[str, Any]:
    """Check a loaded tree against ``jax.eval_shape(module.init, ...)`` and cast to its dtypes.

    Raises:
      WeightFileError naming every missing, unexpected and mis-shaped tensor (all of them, not the
      first one only).
    """
    got = flatten(variables)
    want = {k: v for k, v in flatten_shapes(template).items()}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    misshaped = sorted(
        f"{k} {tuple(got[k].shape)} != expected {tuple(want[k].shape)}"
        for k in set(got) & set(want)
        if tuple(got[k].shape) != tuple(want[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if extra:
        problems.append(f"{len(extra)} unexpected: {', '.join(extra[:8])}{' ...' if len(extra) > 8 else ''}")
    if misshaped:
        problems.append(f"{len(misshaped)} mis-shaped: {'; '.join(misshaped[:8])}{' ...' if len(misshaped) > 8 else ''}")
    if problems:
        raise WeightFileError("weights do not fit the architecture: " + " | ".join(problems), source)
    return unflatten({k: np.asarray(got[k], dtype=want[k].dtype) for k in want})


def flatten_shapes(template: Mapping[str, Any]) -> dict[str, jax.ShapeDtypeStruct]:
    """Like :func:`flatten` for a tree of ``jax.ShapeDtypeStruct`` (no conversion to arrays)."""
    out: dict[str, Any] = {}
    for key, value in template.items():
        if isinstance(value, Mapping):
            out.update({f"{key}{SEP}{k}": v for k, v in flatten_shapes(value).items()})
        else:
            out[key] = value
    return out
