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
from qcamo_jax.record import FIELDS, REENCODED


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def to_json(records: Sequence[Mapping[str, Any]]) -> str:
    """The JSON list written to ``report.json`` (input order, keys in :data:`~qcamo_jax.record.FIELDS` order)."""
    fields = FIELDS
    rows = [{**{k: _clean(r.get(k)) for k in fields}, **{k: _clean(v) for k, v in r.items() if k not in fields}} for r in records]
    return json.dumps(rows, indent=1, allow_nan=False) + "\n"


def reencoder_names(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The re-encoder names of the records' ``reencoded_scores``, in first-seen order."""
    names: dict[str, None] = {}
    for r in records:
        names.update(dict.fromkeys(r.get(REENCODED) or {}))
    return list(names)


def to_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """The CSV text of ``report.csv``: one row per record, columns :data:`~qcamo_jax.record.FIELDS` then
    one ``after <name>`` column per re-encoder (the score after that real re-encoder)."""
    names = reencoder_names(records)
    columns = [*FIELDS, *(f"after {n}" for n in names)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in records:
        after = r.get(REENCODED) or {}
        row = {k: "" if r.get(k) is None else _clean(r.get(k)) for k in FIELDS}
        row.update({f"after {n}": "" if after.get(n) is None else _clean(after[n]) for n in names})
        w.writerow(row)
    return buf.getvalue()


def write_reports(out_dir: str | os.PathLike, records: Sequence[Mapping[str, Any]]) -> None:
    """Write ``report.json`` and ``report.csv`` into ``out_dir``, atomically."""
    out = Path(out_dir)
    fileio.atomic_write_bytes(out / "report.json", to_json(records).encode("utf-8"))
    fileio.atomic_write_bytes(out / "report.csv", to_csv(records).encode("utf-8"))


def read_records(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of the ``report.json`` a run wrote in ``out_dir``; ``[]`` if missing or not a valid report."""
    try:
        data = json.loads((Path(out_dir) / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, list):
        return []
    return [r for r in data if isinstance(r, dict) and isinstance(r.get("path"), str)]


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregate numbers of a run: counts, success rates, mean distortion over attacked images.

    ``success`` is the share of attacked images below the target as saved and after every re-encoder
    (within the distortion limits); ``success_after[name]`` the share below it after that re-encoder.
    """
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
        "success": (sum(bool(r.get("success")) for r in done) / n) if n else None,
        "already_below_target": sum(bool(r.get("already_below_target")) for r in done),
        "success_after": {name: sum((r.get(REENCODED) or {}).get(name, float("inf")) < r["target"] for r in done) / n
                          for name in reencoder_names(done)},
        "mean_original_score": mean("original_score"),
        "mean_final_score": mean("final_score"),
        "mean_worst_score": mean("worst_score"),
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
