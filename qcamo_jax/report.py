"""Reports of an attack run: ``report.json`` (list of records), ``report.csv`` and ``summary.png``.

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


def _crop(a: np.ndarray, size: int = 128) -> np.ndarray:
    h, w = a.shape[:2]
    s = min(size, h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return a[top:top + s, left:left + s]


def write_summary(path: str | os.PathLike, records: Sequence[Mapping[str, Any]], target: float, crops: int = 3,
                  amplify: float = 10.0) -> None:
    """Write ``summary.png``: scores before/after, distortion vs success, and a few crops.

    Top row: (1) each attacked image's score before, as saved, and after quality-90 re-encoding, with
    the target; (2) PSNR against the quality-90 score, successes filled; (3) a text summary. Bottom
    rows: centre crops of up to ``crops`` images: original, output, and the difference amplified
    ``amplify`` times around mid-grey.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from qcamo_jax import imageio

    done = [r for r in records if r.get("error") is None and r.get("final_score") is not None]
    shown = []
    for r in sorted(done, key=lambda r: r["output"] or "")[:crops]:
        try:
            shown.append((r, imageio.load_rgb(r["path"]), imageio.load_rgb(r["output"])))
        except Exception:
            continue
    rows = 1 + len(shown)
    fig = plt.figure(figsize=(13, 3.6 * rows), dpi=80)
    gs = fig.add_gridspec(rows, 3)

    ax = fig.add_subplot(gs[0, 0])
    if done:
        idx = np.arange(len(done))
        ax.scatter(idx, [r["original_score"] for r in done], marker="o", label="original")
        ax.scatter(idx, [r["final_score"] for r in done], marker="x", label="saved")
        ax.scatter(idx, [r["jpeg90_score"] for r in done], marker="+", label="after JPEG q90")
        if len(done) <= 30:
            ax.set_xticks(idx)
            ax.set_xticklabels([Path(r["output"]).stem[:10] for r in done], rotation=60, fontsize=7)
        else:
            ax.set_xlabel("image (report order)")
    ax.axhline(target, color="k", ls="--", lw=1, label=f"target T={target:g}")
    ax.set_ylabel("score")
    ax.set_title("scores before / after")
    ax.legend(fontsize=7)

    ax = fig.add_subplot(gs[0, 1])
    for ok, style in ((True, dict(marker="o", label="success after q90")), (False, dict(marker="o", facecolors="none", edgecolors="C3", label="failure after q90"))):
        pts = [(r["psnr"], r["jpeg90_score"]) for r in done if bool(r["success_jpeg90"]) == ok and r.get("psnr") is not None]
        if pts:
            ax.scatter(*zip(*pts), **style)
    ax.axhline(target, color="k", ls="--", lw=1)
    ax.set_xlabel("PSNR (dB) of the output")
    ax.set_ylabel("score after JPEG q90")
    ax.set_title("distortion vs success")
    ax.legend(fontsize=7)

    ax = fig.add_subplot(gs[0, 2])
    ax.axis("off")
    s = summarize(records)
    lines = [f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in s.items()]
    ax.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=9)

    for i, (r, a, b) in enumerate(shown, start=1):
        if a.shape != b.shape:
            continue
        diff = np.clip(128.0 + amplify * (b.astype(np.float64) - a), 0, 255).astype(np.uint8)
        for j, (img, title) in enumerate(((a, f"original ({r['original_score']:.1f})"),
                                          (b, f"output ({r['final_score']:.1f}; q90 {r['jpeg90_score']:.1f})"),
                                          (diff, f"difference x{amplify:g}"))):
            ax = fig.add_subplot(gs[i, j])
            ax.imshow(_crop(img), interpolation="nearest")
            ax.set_title(f"{Path(r['path']).name}: {title}", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    fileio.atomic_write_bytes(path, buf.getvalue())
