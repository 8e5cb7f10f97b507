"""One batch of a run: load this process's part, call the engine, score, write outputs, make records.

Data contract: :class:`BatchRunner` takes the :class:`~qcamo_jax.pipeline.plan.Item` s of one process's
part of a batch (all of one shape ``(H, W, 3)``) and returns one record (:mod:`qcamo_jax.record`) per
item, in order: a refusal (``error`` set) for a file that cannot be read or changed since probing, else
the scores as saved and after the reference re-encoding, distortion, and hashes. Each output file is
written atomically before its record exists. Every engine call of a shape group has the same batch
size (:func:`~qcamo_jax.pipeline.plan.engine_batch` pads), so each shape compiles once.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from qcamo_jax import fileio
from qcamo_jax.errors import ImageFileError
from qcamo_jax.pipeline.engine import Encoded, Engine
from qcamo_jax.pipeline.inputs import load_input
from qcamo_jax.pipeline.outputs import _crash_point, decode_output, reencode_reference
from qcamo_jax.pipeline.plan import Item, engine_batch
from qcamo_jax.pipeline.scoring import Scorer, distortion
from qcamo_jax.pipeline.settings import REFERENCE_QUALITY, Settings
from qcamo_jax.record import empty_record


class BatchRunner:
    """Attacks one process's part of a batch and writes its output files and records."""

    def __init__(self, out: Path, settings: Settings, shash: str, engine: Engine, scorer: Scorer,
                 log: Callable[[str], None], events=None):
        self.out, self.settings, self.shash, self.engine, self.scorer, self.log = out, settings, shash, engine, scorer, log
        self.events = events  # a qcamo_jax.pipeline.progress.Progress, or None

    def refusal(self, it: Item, reason: str, *, log: bool = True) -> dict[str, Any]:
        """The record of a refused input (``error`` set, no output), logged as one line if ``log``."""
        rec = empty_record(it.path, self.settings)
        rec.update(error=reason, input_sha256=it.sha, settings_hash=self.shash)
        if log:
            self.log(f"qcamo: skipped {it.path}: {reason}")
        return rec

    def attack_part(self, part: Sequence[Item], shape: Sequence[int], size: int, score_batch: int, *,
                    collective: bool, batch_images: int | None = None) -> list[dict[str, Any]]:
        """Attack ``part`` (images of ``shape``), write the outputs; one record per item of ``part``.

        Args:
          part: this process's items of the batch; in a multi-process run possibly none.
          shape: ``(H, W, 3)`` of every image of the batch.
          size: engine batch size of this shape group, the same for every call and every process.
          score_batch: chunk size of the scorer: the whole batch's size, so that scores are computed as
            in a single-process run.
          collective: the engine call is collective: make it even when no image of ``part`` is left.
          batch_images: images of the whole batch (all processes), for the progress bar; default ``part``'s.
        """
        t0 = time.perf_counter()
        recs: dict[int, dict[str, Any]] = {}
        images, good = [], []
        for it in part:
            try:
                img = load_input(it.path, shape, it.sha)
            except (ImageFileError, OSError) as exc:
                recs[it.index] = self.refusal(it, getattr(exc, "message", None) or f"cannot read ({exc})")
                continue
            images.append(img)
            good.append(it)
        if good or collective:
            x, seeds = engine_batch(images, [it.seed for it in good], size, shape)
            if self.events is not None:
                expected = getattr(self.engine, "expected_units", None)
                self.events.batch_start(len(part) if batch_images is None else batch_images,
                                        expected(shape, size) if expected else 1)
            encoded = list(self.engine(x, seeds))[: len(good)]
            if good:
                recs.update(self._results(good, x[: len(good)], encoded, shape, score_batch, t0))
        return [recs[it.index] for it in part]

    def _results(self, good: Sequence[Item], x: np.ndarray, encoded: Sequence[Encoded], shape: Sequence[int],
                 score_batch: int, t0: float) -> dict[int, dict[str, Any]]:
        """Score and measure the outputs of ``x`` (``uint8 [n, H, W, 3]``), write them; records by item index."""
        settings = self.settings
        n = len(good)
        decoded = np.stack([decode_output(e.data) for e in encoded])
        reencoded = np.stack([reencode_reference(d, REFERENCE_QUALITY, settings.reference_encoder) for d in decoded])
        scores = self.scorer(np.concatenate([x, decoded, reencoded]), score_batch)
        s_orig, s_final, s_jpeg = scores[:n], scores[n:2 * n], scores[2 * n:]
        dist = distortion(x, decoded)
        seconds = (time.perf_counter() - t0) / n
        recs = {}
        for j, it in enumerate(good):
            dest = self.out / it.name
            fileio.atomic_write_bytes(dest, encoded[j].data)
            _crash_point("output")
            rec = empty_record(it.path, settings)
            rec.update(
                output=os.fspath(dest), height=int(shape[0]), width=int(shape[1]),
                original_score=float(s_orig[j]), final_score=float(s_final[j]), jpeg90_score=float(s_jpeg[j]),
                success_saved=bool(s_final[j] < settings.target), success_jpeg90=bool(s_jpeg[j] < settings.target),
                seconds=round(seconds, 4), input_sha256=it.sha, output_sha256=hashlib.sha256(encoded[j].data).hexdigest(),
                seed=int(it.seed), settings_hash=self.shash,
            )
            rec.update(dist[j])
            for k, v in dict(encoded[j].extras).items():
                if k in rec and rec[k] is None:
                    rec[k] = _jsonable(v)
            recs[it.index] = rec
        return recs


def _jsonable(v):
    """``v`` as a JSON-able Python value (NumPy and JAX scalars and arrays become numbers and lists)."""
    if isinstance(v, (np.generic, np.ndarray)):
        v = np.asarray(v)
        return v.item() if v.ndim == 0 else v.tolist()
    if hasattr(v, "shape") and getattr(v, "ndim", 1) == 0:  # jax scalars
        return np.asarray(v).item()
    return v
