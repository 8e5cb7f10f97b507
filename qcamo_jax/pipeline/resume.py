"""``--resume``: which results of a previous run in the output folder can be kept as they are.

Data contract: the previous run's records come from its ``report.json`` (a list of record dicts, see
:mod:`qcamo_jax.record`), keyed by input path. A record is reusable only if it has no ``error``, the
same ``input_sha256`` and ``settings_hash`` as now, and its output file still has ``output_sha256``;
a batch is reused only if all of its records are, on every process (:func:`reuse_flags`), so a
resumed run recomputes a batch exactly as an uninterrupted run would.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from qcamo_jax import fileio
from qcamo_jax.report import read_records


def load_previous_records(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Records of a previous run in ``out_dir`` (by input path), or ``{}`` if there is no valid report."""
    return {r["path"]: r for r in read_records(out_dir)}


def reusable(rec: Mapping[str, Any] | None, sha: str, shash: str, out_dir: Path) -> bool:
    """Can ``rec`` (a previous record or ``None``) stand for the input with SHA-256 ``sha`` under ``shash``?"""
    if not rec or rec.get("error") is not None or rec.get("input_sha256") != sha or rec.get("settings_hash") != shash:
        return False
    out = rec.get("output")
    if not out:
        return False
    p = out_dir / Path(out).name
    try:
        return fileio.sha256_file(p) == rec.get("output_sha256")
    except OSError:
        return False


def reuse_flags(plan, previous: Mapping[str, dict], shash: str, out: Path, group) -> list[bool]:
    """Per batch of ``plan``: can ``--resume`` reuse the previous results of the whole batch?

    Each process checks the records and output files of its part of every batch; a batch is reused
    only if every process says yes (one gather), so the decision is the same on every process.
    """
    if not previous:  # the same on every process (broadcast from process 0)
        return [False] * len(plan)
    mine = [all(reusable(previous.get(os.fspath(it.path)), it.sha, shash, out) for it in group.part(batch))
            for _, _, batch in plan]
    return [all(flags) for flags in zip(*group.allgather(mine))] if plan else []


def finished_records(records, previous, resume):
    """Records so far, plus (when resuming) previous complete records not yet revisited."""
    out = [r for r in records if r is not None]
    if resume:
        seen = {r["path"] for r in out}
        out.extend(r for p, r in previous.items() if p not in seen and r.get("error") is None)
    return out
