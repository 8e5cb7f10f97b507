"""The per-image record of an attack run: its fields, defined once.

Data contract: a record is a ``dict`` per input image whose keys are :data:`FIELDS` (the columns
of ``report.csv`` in order, and the keys of each ``report.json`` object) plus ``reencoded_scores``, a
``{re-encoder name: score}`` dict (``"pillow-420:90"``: the output re-encoded by that real library at
that quality, then decoded by Pillow), which report.csv spreads into one ``after <name>`` column per
re-encoder. Scores (``original_score``, ``final_score`` as saved, ``worst_score`` the highest of the
saved score and every re-encoder's, ``worst_reencoder`` which one) are on the model's 0-100 scale;
``success`` is true only when the saved score and every re-encoder's are below ``target`` and the
distortion limits (``within_limit``) hold; ``already_below_target`` says the input needed no change
(the plain re-encoding, or the input itself, met the target); ``survive`` is the re-encoder set's spec; ``l2``/``linf`` are in pixel units (0-255), ``psnr`` in dB (``None`` for identical images),
``seconds`` is wall time per image, ``height``/``width`` pixels. A refused input has ``error`` (one line)
set and ``output`` ``None``. The pipeline (:mod:`qcamo_jax.pipeline`) fills records and
:mod:`qcamo_jax.report` writes them; both import from here, and this module imports nothing of the package.
"""

from __future__ import annotations

import os
from typing import Any

#: Columns of report.csv, in order (report.json objects carry the same keys, plus ``reencoded_scores``).
FIELDS = (
    "path", "output", "error", "success", "original_score", "final_score", "worst_score", "worst_reencoder",
    "success_saved", "already_below_target", "within_limit", "l2", "linf", "psnr", "ssim", "seconds", "height",
    "width", "target", "survive", "method", "quantize", "budget", "iterations", "input_sha256", "output_sha256",
    "seed", "settings_hash",
)


def empty_record(path: str | os.PathLike, settings) -> dict[str, Any]:
    """A record of :data:`FIELDS`, all ``None`` but ``path`` and the settings' ``target``, ``survive``,
    ``method``, ``quantize``.

    Args:
      path: the input file.
      settings: a :class:`qcamo_jax.pipeline.Settings` (only those four attributes are read).
    """
    rec = {k: None for k in FIELDS}
    rec.update(path=os.fspath(path), target=float(settings.target), survive=settings.survive, method=settings.method,
               quantize=settings.quantize)
    return rec


#: The per-re-encoder scores of a record (a ``{name: score}`` dict; report.csv: ``after <name>`` columns).
REENCODED = "reencoded_scores"


def reached_target(rec: dict[str, Any]) -> bool:
    """Whether an attacked image is below its target as saved and after every re-encoder checked, within
    the distortion limits: the record's ``success`` (``False`` for a refused or failed image)."""
    return rec.get("error") is None and bool(rec.get("success"))
