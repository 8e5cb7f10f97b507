"""The rows of ``qcamo evaluate``, summed up and written: success rates, tables, CSV and JSON.

Data contract: :class:`Row` (one per evaluated file, made by :func:`qcamo_jax.evaluate.evaluate_files`)
in; a summary ``dict`` (:func:`summarize`), a text table (:func:`format_table`) and the
``<stem>.csv`` / ``<stem>.json`` files (:func:`write_reports`, written atomically) out. A file succeeds
for a column when its score is below its target; the success rates are the paper's P_png / P_jpg.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from qcamo_jax.errors import QcamoError
from qcamo_jax.fileio import atomic_write


class Row(NamedTuple):
    """One evaluated file. Scores in model units; ``jpg`` maps encoder name -> score after it."""

    file: str
    original: str
    target: float
    score_original: float
    score_png: float
    jpg: dict
    l2: float
    psnr: float
    ssim: float


def summarize(rows: Sequence[Row]) -> dict:
    """Success rates (``P_png``, ``P_jpg`` per encoder, in [0, 1]) and mean distortion."""
    n = len(rows)
    if n == 0:
        return {"n": 0}
    names = list(rows[0].jpg)
    finite_psnr = [r.psnr for r in rows if math.isfinite(r.psnr)]
    return {
        "n": n,
        "P_png": sum(r.score_png < r.target for r in rows) / n,
        "P_jpg": {k: sum(r.jpg[k] < r.target for r in rows) / n for k in names},
        "mean_score_png": float(np.mean([r.score_png for r in rows])),
        "mean_score_jpg": {k: float(np.mean([r.jpg[k] for r in rows])) for k in names},
        "mean_l2": float(np.mean([r.l2 for r in rows])),
        "mean_psnr": float(np.mean(finite_psnr)) if finite_psnr else float("inf"),
        "mean_ssim": float(np.mean([r.ssim for r in rows])),
    }


def format_table(rows: Sequence[Row], summary: Mapping) -> str:
    """Human-readable tables that fit :data:`qcamo_jax.display.TABLE_WIDTH` columns (the CSV has every number).

    First table, one line per file: its target, the score of the original, of the file as saved
    (``png``) and the worst score after re-encoding (``worst jpg``: the highest over the encoders),
    how many encoders leave it below T, and the distortion; then an ``all`` line with the success
    rates. Second table, one line per encoder: its success rate ``P_jpg`` and mean score.
    """
    from qcamo_jax.display import table

    names = list(rows[0].jpg) if rows else []
    n = len(names)
    lines = []
    for r in rows:
        below = sum(v < r.target for v in r.jpg.values())
        worst = max(r.jpg.values()) if names else float("nan")
        lines.append([r.file, f"{r.target:.1f}", f"{r.score_original:.1f}", f"{r.score_png:.1f}", f"{worst:.1f}",
                      f"{below}/{n}", f"{r.l2:.0f}", f"{r.psnr:.2f}", f"{r.ssim:.4f}"])
    if rows:
        all_below = sum(all(v < r.target for v in r.jpg.values()) for r in rows)
        lines.append([f"all ({len(rows)} files)", "", "", f"{100 * summary['P_png']:.0f}%", "",
                      f"{100 * all_below / len(rows):.0f}%", f"{summary['mean_l2']:.0f}", f"{summary['mean_psnr']:.2f}",
                      f"{summary['mean_ssim']:.4f}"])
    head = ["file", "T", "orig", "png", "worst jpg", "encoders < T", "L2", "PSNR", "SSIM"]
    text = table(head, lines)
    if names:
        per = [[k, f"{100 * summary['P_jpg'][k]:.0f}%", f"{summary['mean_score_jpg'][k]:.2f}"] for k in names]
        text += "\n\n" + table(["re-encoder", "P_jpg (below T)", "mean score"], per)
    return text


def to_csv(rows: Sequence[Row]) -> str:
    """Per-file CSV: file, original, target, scores (original, png, one column per encoder), distortion."""
    names = list(rows[0].jpg) if rows else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "original", "target", "score_original", "score_png"] + [f"score_jpg_{k}" for k in names] + ["l2", "psnr", "ssim"])
    for r in rows:
        w.writerow(
            [r.file, r.original, f"{r.target:.4f}", f"{r.score_original:.4f}", f"{r.score_png:.4f}"]
            + [f"{r.jpg[k]:.4f}" for k in names]
            + [f"{r.l2:.4f}", f"{r.psnr:.4f}", f"{r.ssim:.6f}"]
        )
    return buf.getvalue()


def to_json(rows: Sequence[Row], summary: Mapping, meta: Mapping | None = None) -> str:
    def clean(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v

    payload = {
        "meta": dict(meta or {}),
        "summary": {k: clean(v) for k, v in summary.items()},
        "files": [{k: clean(v) for k, v in r._asdict().items()} for r in rows],
    }
    return json.dumps(payload, indent=2, allow_nan=False)


def check_replaceable(out_stem: str | os.PathLike) -> None:
    """Refuse, before any work, to replace a ``<stem>.json`` / ``<stem>.csv`` that is not an earlier evaluation.

    An earlier ``qcamo evaluate``'s JSON (an object with ``meta``, ``summary`` and ``files``) and its CSV are
    replaced; a file of the user's own under those names is not.

    Raises:
      QcamoError: naming the file at risk.
    """
    stem = Path(out_stem)
    json_path, csv_path = stem.with_suffix(".json"), stem.with_suffix(".csv")
    ours = False
    if json_path.exists():
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        ours = isinstance(data, dict) and {"meta", "summary", "files"} <= data.keys()
        if not ours:
            raise QcamoError("is not an earlier qcamo evaluation and would be replaced; move it or choose another --out",
                             json_path)
    if csv_path.exists() and not ours:
        raise QcamoError("would be replaced, and no earlier qcamo evaluation is beside it; move it or choose "
                         "another --out", csv_path)


def write_reports(out_stem: str | os.PathLike, rows: Sequence[Row], summary: Mapping, meta: Mapping | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` and ``<stem>.json`` atomically; return their paths."""
    stem = Path(out_stem)
    csv_path, json_path = stem.with_suffix(".csv"), stem.with_suffix(".json")
    with atomic_write(csv_path, "w") as f:
        f.write(to_csv(rows))
    with atomic_write(json_path, "w") as f:
        f.write(to_json(rows, summary, meta))
    return csv_path, json_path
