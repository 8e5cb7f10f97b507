"""The per-image record of an attack run: its fields, defined once.

Data contract: a record is a flat ``dict`` per input image whose keys are :data:`FIELDS` (the columns
of ``report.csv`` in order, and the keys of each ``report.json`` object). Scores (``original_score``,
``final_score`` as saved, ``jpeg90_score`` after the reference quality-90 re-encoding) are on the model's
0-100 scale; ``l2``/``linf`` are in pixel units (0-255), ``psnr`` in dB (``None`` for identical images),
``seconds`` is wall time per image, ``height``/``width`` pixels. A refused input has ``error`` (one line)
set and ``output`` ``None``. The pipeline (:mod:`qcamo_jax.pipeline`) fills records and
:mod:`qcamo_jax.report` writes them; both import from here, and this module imports nothing of the package.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

#: Columns of report.csv, in order (report.json objects carry the same keys).
FIELDS = (
    "path", "output", "error", "original_score", "final_score", "jpeg90_score", "success_saved", "success_jpeg90",
    "l2", "linf", "psnr", "ssim", "seconds", "height", "width", "target", "method", "quantize", "budget",
    "iterations", "input_sha256", "output_sha256", "seed", "settings_hash",
)


def empty_record(path: str | os.PathLike, settings) -> dict[str, Any]:
    """A record of :data:`FIELDS`, all ``None`` but ``path`` and the settings' ``target``, ``method``, ``quantize``.

    Args:
      path: the input file.
      settings: a :class:`qcamo_jax.pipeline.Settings` (only those three attributes are read).
    """
    rec = {k: None for k in FIELDS}
    rec.update(path=os.fspath(path), target=float(settings.target), method=settings.method, quantize=settings.quantize)
    return rec


#: The record fields that must all be true for an image to have reached the target: below T as saved,
#: and below T after each re-encoding checked. (Change this one place when the re-encoders change.)
SUCCESS_FIELDS = ("success_saved", "success_jpeg90")


def reached_target(rec: Mapping[str, Any]) -> bool:
    """Did this input's output get below the target T, as saved and after every re-encoder checked?

    ``False`` for a refused input (``error`` set) or a record missing any of :data:`SUCCESS_FIELDS`.
    """
    return rec.get("error") is None and all(rec.get(k) is True for k in SUCCESS_FIELDS)
