"""Reports of an attack run: ``report.json`` (list of records), ``report.csv`` and the ``summary.png`` pages.

A record is a flat dict with the keys of :data:`qcamo_jax.record.FIELDS` (one per input image; a
refused input has ``error`` set and ``output`` null). Everything is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from qcamo_jax import fileio
from qcamo_jax.record import FIELDS


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def to_json(records: Sequence[Mapping[str, Any]]) -> str:
    """The JSON list written to ``report.json`` (input order, keys in :data:`~qcamo_jax.record.FIELDS` order)."""
    fields = FIELDS
    rows = [{**{k: _clean(r.get(k)) for k in fields}, **{k: _clean(v) for k, v in r.items() if k not in fields}} for r in records]
    return json.dumps(rows, indent=1, allow_nan=False) + "\n"


def to_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """The CSV text of ``report.csv``: one row per record, columns :data:`~qcamo_jax.record.FIELDS`."""
    fields = FIELDS
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: "" if r.get(k) is None else _clean(r.get(k)) for k in fields})
    return buf.getvalue()


def write_reports(out_dir: str | os.PathLike, records: Sequence[Mapping[str, Any]]) -> None:
    """Write ``report.json`` and ``report.csv`` into ``out_dir``, atomically."""
    out = Path(out_dir)
    fileio.atomic_write_bytes(out / "report.json", to_json(records).encode("utf-8"))
    fileio.atomic_write_bytes(out / "report.csv", to_csv(records).encode("utf-8"))


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregate numbers of a run: counts, success rates, mean distortion over attacked images."""
    done = [r for r in records if r.get("error") is None and r.get("final_score") is not None]
    n = len(done)

    def mean(k):
        v = [r[k] for r in done if r.get(k) is not None]
        return float(np.mean(v)) if v else None

    return {
        "inputs": len(records),
        "attacked": n,
        "refused": sum(r.get("error") is not None for r in records),
        "success_saved": (sum(bool(r["success_saved"]) for r in done) / n) if n else None,
        "success_jpeg90": (sum(bool(r["success_jpeg90"]) for r in done) / n) if n else None,
        "mean_original_score": mean("original_score"),
        "mean_final_score": mean("final_score"),
        "mean_jpeg90_score": mean("jpeg90_score"),
        "mean_psnr": mean("psnr"),
        "mean_ssim": mean("ssim"),
        "mean_seconds": mean("seconds"),
    }


def write_summary(path: str | os.PathLike, records: Sequence[Mapping[str, Any]], target: float,
                  *, per_page: int | None = None) -> list:
    """Write ``summary.png`` (and ``summary-2.png`` ... beyond one page): every image, its scores, where it changed.

    Args:
      path: the first page, ``DIR/summary.png``.
      records: the run's records (refused ones included; each is drawn, with its error if it has one).
      target: the score T.
      per_page: images per page (default :data:`qcamo_jax.summary_plot.PER_PAGE`).

    Returns:
      ``[SummaryPage(path, images)]``: each page written and the input ``path`` of each record on it.
      See :mod:`qcamo_jax.summary_plot` for what a page shows.
    """
    from qcamo_jax import summary_plot  # matplotlib: only when a summary is drawn

    return summary_plot.write_pages(path, records, target, summarize(records),
                                    per_page=per_page or summary_plot.PER_PAGE)
