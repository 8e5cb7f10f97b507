"""One batch of a run: load this process's part, call the engine, score, write outputs, make records.

Data contract: :class:`BatchRunner` takes the :class:`~qcamo_jax.pipeline.plan.Item` s of one process's
part of a batch (all of one shape ``(H, W, 3)``) and returns one record (:mod:`qcamo_jax.record`) per
item, in order: a refusal (``error`` set) for a file that cannot be read or changed since probing, a
failure (``error`` = ``"failed: <exception type>: <message>"``, traceback in the log) for an image whose
attack, quantization, encoding or writing raised - the other images of the batch go on -, else
the scores as saved and after every real re-encoder of the set (``--survive``), distortion, and hashes. Each output file is
written atomically before its record exists. Every engine call of a shape group has the same batch
size (:func:`~qcamo_jax.pipeline.plan.engine_batch` pads), so each shape compiles once.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from qcamo_jax import fileio
from qcamo_jax.errors import ImageFileError, skip_line
from qcamo_jax.pipeline.engine import Encoded, Engine
from qcamo_jax.pipeline.inputs import load_input
from qcamo_jax.pipeline.outputs import _crash_point, decode_output
from qcamo_jax.pipeline.plan import Item, engine_batch
from qcamo_jax.pipeline.scoring import Scorer, distortion
from qcamo_jax.pipeline.settings import Settings
from qcamo_jax.record import empty_record


class Attacked(NamedTuple):
    """One process's part of a batch after :meth:`BatchRunner.attack`: what :meth:`BatchRunner.finish` needs.

    Attributes:
      part: the items of the part, in order.
      shape: ``(H, W, 3)``.
      score_batch: the scorer's chunk size.
      t0: ``time.perf_counter()`` when the part started (for the per-image ``seconds``).
      recs: records already decided (refused inputs), by item index.
      good: the items that reached the engine.
      x: ``uint8 [len(good), H, W, 3]`` their pixels.
      encoded: per item of ``good``, an :class:`~qcamo_jax.pipeline.engine.Encoded` or the exception.
      shown: the engine ran (the progress got a ``batch_start`` for this part).
    """

    part: list
    shape: tuple
    score_batch: int
    t0: float
    recs: dict
    good: list
    x: np.ndarray
    encoded: list
    shown: bool


class BatchRunner:
    """Attacks one process's part of a batch and writes its output files and records."""

    def __init__(self, out: Path, settings: Settings, shash: str, engine: Engine, scorer: Scorer,
                 log: Callable[[str], None], events=None):
        from qcamo_jax.evaluate import set_reencoders

        self.out, self.settings, self.shash, self.engine, self.scorer, self.log = out, settings, shash, engine, scorer, log
        self.events = events  # a qcamo_jax.pipeline.progress.Progress, or None
        #: member name -> real re-encoder (path -> pixels); raises QcamoError up front if one is missing.
        self.reencoders = set_reencoders(settings.reencoder_set)

    def refusal(self, it: Item, reason: str, *, log: bool = True) -> dict[str, Any]:
        """The record of a refused input (``error`` set, no output), logged as one line if ``log``."""
        rec = empty_record(it.path, self.settings)
        rec.update(error=reason, input_sha256=it.sha, settings_hash=self.shash)
        if log:
            self.log(skip_line(it.path, reason))
        return rec

    def attack_part(self, part: Sequence[Item], shape: Sequence[int], size: int, score_batch: int, *,
                    collective: bool, batch_images: int | None = None) -> list[dict[str, Any]]:
        """Attack ``part`` (images of ``shape``), write the outputs; one record per item of ``part``.

        The two halves, :meth:`attack` (inputs and the engine: device work) and :meth:`finish` (scores,
        real re-encodings, files: host work), can also be called apart, so that a run overlaps one
        batch's host work with the next batch's device work (:func:`qcamo_jax.pipeline.runner.run`).

        Args:
          part: this process's items of the batch; in a multi-process run possibly none.
          shape: ``(H, W, 3)`` of every image of the batch.
          size: engine batch size of this shape group, the same for every call and every process.
          score_batch: chunk size of the scorer: the whole batch's size, so that scores are computed as
            in a single-process run.
          collective: the engine call is collective: make it even when no image of ``part`` is left.
          batch_images: images of the whole batch (all processes), for the progress bar; default ``part``'s.
        """
        return self.finish(self.attack(part, shape, size, score_batch, collective=collective,
                                       batch_images=batch_images))

    def attack(self, part: Sequence[Item], shape: Sequence[int], size: int, score_batch: int, *,
               collective: bool, batch_images: int | None = None) -> Attacked:
        """Read ``part``'s inputs and run the engine on them (arguments as :meth:`attack_part`)."""
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
        x, encoded = np.zeros((0, *shape), np.uint8), []
        if good or collective:
            if self.events is not None:
                expected = getattr(self.engine, "expected_units", None)
                self.events.batch_start(len(part) if batch_images is None else batch_images,
                                        expected(shape, size) if expected else 1)
            x, encoded = self._engine_outputs(images, good, size, shape, collective)
        return Attacked(list(part), tuple(shape), score_batch, t0, recs, good, x, encoded, bool(good or collective))

    def finish(self, attacked: Attacked) -> list[dict[str, Any]]:
        """Score, re-encode and write the outputs of :meth:`attack`; one record per item of its part."""
        part, recs, good, encoded = attacked.part, dict(attacked.recs), attacked.good, attacked.encoded
        done = [j for j, e in enumerate(encoded) if not isinstance(e, BaseException)]
        for j, e in enumerate(encoded):
            if isinstance(e, BaseException):
                recs[good[j].index] = self.failure(good[j], e)
        if done:
            recs.update(self._results([good[j] for j in done], attacked.x[done], [encoded[j] for j in done],
                                      attacked.shape, attacked.score_batch, attacked.t0))
        return [recs[it.index] for it in part]

    def failure(self, it: Item, exc: BaseException) -> dict[str, Any]:
        """The record of an image whose attack, quantization, encoding or writing raised ``exc``.

        The ``error`` field holds the exception's type and message on one line; the traceback goes to the
        log, so that one bad image costs the others nothing and the cause can still be found.
        """
        reason = " ".join(f"failed: {type(exc).__name__}: {exc}".split())
        rec = self.refusal(it, reason, log=False)
        self.log(f"qcamo: {it.path}: {reason}")
        self.log("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip())
        return rec

    def _engine_outputs(self, images: list[np.ndarray], good: Sequence[Item], size: int, shape: Sequence[int],
                        collective: bool) -> tuple[np.ndarray, list[Encoded | BaseException]]:
        """The engine's output for each image of ``good`` (``uint8 [n, H, W, 3]`` inputs, and per image an
        :class:`Encoded` or the exception that made it fail).

        When the batched call raises, each image is run again alone (padded to the same batch size, so no
        new compile) to tell the image that fails from the ones that do not. A collective call (multi-host)
        cannot be retried by one process alone: there every image of the part gets the batch's exception.
        """
        x, seeds = engine_batch(images, [it.seed for it in good], size, shape)
        try:
            return x[: len(good)], list(self.engine(x, seeds))[: len(good)]
        except Exception as exc:  # noqa: BLE001 - any failure of one image must not stop the run
            if collective or len(good) <= 1:
                return x[: len(good)], [exc] * len(good)
        out: list[Encoded | BaseException] = []
        for img, it in zip(images, good):
            xi, si = engine_batch([img], [it.seed], size, shape)
            try:
                out.append(list(self.engine(xi, si))[0])
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return x[: len(good)], out

    def _results(self, good: Sequence[Item], x: np.ndarray, encoded: Sequence[Encoded], shape: Sequence[int],
                 score_batch: int, t0: float) -> dict[int, dict[str, Any]]:
        """Score and measure the outputs of ``x`` (``uint8 [n, H, W, 3]``), write them; records by item index.

        Each output is scored as saved (Pillow's decode) and after every member of the re-encoder set,
        run by the REAL library on the output file (:func:`qcamo_jax.evaluate.set_reencoders`), never by
        our emulation: ``success`` is what a user meets.
        """
        settings = self.settings
        recs: dict[int, dict[str, Any]] = {}
        names = list(self.reencoders)
        # Host work per image (decode, real re-encodings) may fail for one image only.
        ok, decoded, reencoded = [], [], []
        for j, it in enumerate(good):
            try:
                d = decode_output(encoded[j].data)
                r = self._reencode(encoded[j].data, settings.extension)
            except Exception as exc:  # noqa: BLE001
                recs[it.index] = self.failure(it, exc)
                continue
            ok.append(j)
            decoded.append(d)
            reencoded.extend(r)
        if not ok:
            return recs
        n, e = len(ok), len(names)
        x = x[ok]
        decoded_a = np.stack(decoded)
        try:
            scores = self.scorer(np.concatenate([x, decoded_a, *([np.stack(reencoded)] if e else [])]), score_batch)
        except Exception as exc:  # noqa: BLE001 - the run goes on with the next batch
            recs.update({good[j].index: self.failure(good[j], exc) for j in ok})
            return recs
        s_orig, s_final = scores[:n], scores[n:2 * n]
        s_set = scores[2 * n:].reshape(n, e)
        dist = distortion(x, decoded_a)
        seconds = (time.perf_counter() - t0) / len(good)
        for i, j in enumerate(ok):
            it = good[j]
            dest = self.out / it.name
            try:
                fileio.atomic_write_bytes(dest, encoded[j].data)
            except OSError as exc:
                recs[it.index] = self.failure(it, exc)
                continue
            _crash_point("output")
            after = {name: float(s_set[i, m]) for m, name in enumerate(names)}
            worst_name, worst = max([("as saved", float(s_final[i])), *after.items()], key=lambda kv: kv[1])
            within = within_limit(dist[i], settings)
            rec = empty_record(it.path, settings)
            rec.update(
                output=os.fspath(dest), height=int(shape[0]), width=int(shape[1]),
                original_score=float(s_orig[i]), final_score=float(s_final[i]), worst_score=worst,
                worst_reencoder=worst_name, reencoded_scores=after,
                success_saved=bool(s_final[i] < settings.target), success=bool(worst < settings.target and within),
                within_limit=within,
                seconds=round(seconds, 4), input_sha256=it.sha, output_sha256=hashlib.sha256(encoded[j].data).hexdigest(),
                seed=int(it.seed), settings_hash=self.shash,
            )
            rec.update(dist[i])
            for k, v in dict(encoded[j].extras).items():
                if k in rec and rec[k] is None:
                    rec[k] = _jsonable(v)
            recs[it.index] = rec
        return recs

    def _reencode(self, data: bytes, extension: str) -> list[np.ndarray]:
        """Pixels of ``data`` (an output file's bytes) after each real re-encoder of the set, in order."""
        if not self.reencoders:
            return []
        with tempfile.TemporaryDirectory(prefix="qcamo_reenc_") as tmp:
            path = os.path.join(tmp, "output" + extension)
            with open(path, "wb") as f:
                f.write(data)
            return [fn(path) for fn in self.reencoders.values()]


def within_limit(dist: dict[str, Any], settings: Settings) -> bool:
    """Whether an output's distortion (:func:`~qcamo_jax.pipeline.scoring.distortion` of it) meets
    ``--max-l2`` and ``--min-psnr`` (true when neither is set; an identical output meets any PSNR)."""
    if settings.max_l2 is not None and dist["l2"] > settings.max_l2:
        return False
    return settings.min_psnr is None or dist["psnr"] is None or dist["psnr"] >= settings.min_psnr


def _jsonable(v):
    """``v`` as a JSON-able Python value (NumPy and JAX scalars and arrays become numbers and lists)."""
    if isinstance(v, (np.generic, np.ndarray)):
        v = np.asarray(v)
        return v.item() if v.ndim == 0 else v.tolist()
    if hasattr(v, "shape") and getattr(v, "ndim", 1) == 0:  # jax scalars
        return np.asarray(v).item()
    return v
