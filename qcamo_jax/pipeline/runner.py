"""The run loop: probe the inputs, plan the batches, attack each batch, checkpoint the reports.

Data contract: :func:`run` takes what the user typed (files, folders, globs), an output folder, a
quality model and :class:`~qcamo_jax.pipeline.settings.Settings`, and returns a :class:`RunResult`
with one record (:mod:`qcamo_jax.record`) per input in input order. It ties the other modules of
:mod:`qcamo_jax.pipeline` together and holds no rule of its own beyond their order: pass 1 probes
every input once (:mod:`~qcamo_jax.pipeline.inputs`), the plan groups them by shape
(:mod:`~qcamo_jax.pipeline.plan`), ``--resume`` keeps what it can (:mod:`~qcamo_jax.pipeline.resume`),
each batch is attacked and written (:mod:`~qcamo_jax.pipeline.batch`), and after every batch the
reports are rewritten atomically (:mod:`qcamo_jax.report`). A batch's host work (scoring its outputs,
the real re-encoders, writing files) runs in one worker thread while the next batch's engine call
runs, so the device does not wait for the host; batches still finish, and are reported, in order.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, NamedTuple, Sequence

from qcamo_jax import exitcodes
from qcamo_jax import report as report_mod
from qcamo_jax.errors import QcamoError
from qcamo_jax.pipeline.batch import BatchRunner
from qcamo_jax.pipeline.engine import Engine, make_engine
from qcamo_jax.pipeline.inputs import discover_inputs, probe_input
from qcamo_jax.pipeline.outputs import (SUMMARY_PNG, _crash_point, check_existing_files_are_runs, check_inputs_spared,
                                        check_log_spared, check_output_dir, output_names, prepare_output_dir,
                                        write_manifest)
from qcamo_jax.pipeline.plan import Item, job_fingerprint, plan_batches
from qcamo_jax.pipeline.progress import Progress
from qcamo_jax.pipeline.resume import finished_records, load_previous_records, reuse_flags
from qcamo_jax.pipeline.scoring import Scorer
from qcamo_jax.pipeline.settings import Settings, image_seed, model_identity, settings_hash


class RunResult(NamedTuple):
    """What :func:`run` did: all records (one per input, in input order) and the counts."""

    records: list[dict[str, Any]]
    processed: int
    reused: int
    failed: int

    @property
    def exit_code(self) -> int:
        """The command's exit code for these records (:func:`qcamo_jax.exitcodes.for_records`)."""
        return exitcodes.for_records(self.records)


def run(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    model,
    settings: Settings = Settings(),
    *,
    engine: Engine | None = None,
    batch_size: int = 4,
    resume: bool = False,
    devices: str | None = None,
    progress: bool = True,
    summary: bool = True,
    log: Callable[[str], None] | None = None,
    log_json: str | os.PathLike | None = None,
    overlap: bool = True,
) -> RunResult:
    """Attack every input image and write outputs, ``report.json``, ``report.csv`` and ``summary.png``.

    Multi-process (after :func:`qcamo_jax.sharding.initialize_distributed`): call it on every process
    with the same arguments. The processes probe a part of the inputs each and share what they found,
    so they all plan the same batches and refuse the same files; each attacks its part of every batch
    and writes those outputs (see :mod:`qcamo_jax.multihost`); the records of every batch are gathered
    on every process, process 0 writes the reports and the summary, and every process returns the same
    :class:`RunResult`. ``out_dir`` may be shared by the hosts or local to each.

    Args:
      inputs: files, folders and globs (see :func:`discover_inputs`).
      out_dir: output folder (created if missing).
      model: a :class:`qcamo_jax.models.hub.QualityModel`.
      settings: :class:`Settings`.
      engine: the attack + quantizer (default :func:`make_engine` ``(model, settings, devices)``).
      batch_size: images per accelerator call (per shape group: ``min(batch_size, group size)``); in a
        multi-process run, per call of the whole job (each process gets ``ceil(b / processes)``).
      resume: skip images whose output and record from a previous run in ``out_dir`` are intact and
        were made with the same settings; everything else is (re)computed.
      devices: ``None`` for the default device, ``"all"`` or a count to shard batches over devices.
      progress: show the progress bar (moving inside a batch, with ETA) and a line per compilation on
        stderr (process 0 only); see :mod:`qcamo_jax.pipeline.progress`.
      summary: write ``summary.png``.
      log: where one-line messages (refusals, warnings, the table of images that missed T) go;
        default stderr.
      log_json: append the run's events as JSON lines to this file (process 0 only).
      overlap: run each batch's host work (scoring, real re-encoders, writing) in a worker thread
        while the next batch is on the device; ``False`` does them one after the other (the same
        records, for measuring what the overlap saves: ``benchmarks/pipeline_overhead.py``).

    Returns:
      :class:`RunResult`; ``exit_code`` as :mod:`qcamo_jax.exitcodes` defines.

    Raises:
      QcamoError: the output folder is unusable, or no input is a valid image (then nothing is
        created: no folder, no report), or the processes of a multi-process run were given different
        inputs or settings.
    """
    from qcamo_jax.multihost import ProcessGroup

    group = ProcessGroup.current()
    out = check_output_dir(out_dir)  # refused early, but created only once there is a valid input
    paths = discover_inputs(inputs, exclude=out)
    if not paths:
        raise QcamoError("no input images found in " + " ".join(map(os.fspath, inputs)))
    if log is None:
        log = _stderr_log(progress)
    if engine is None:
        engine = make_engine(model, settings, devices=devices, batch_size=batch_size)
    shash = settings_hash(settings, model_identity(model), engine.identity)
    names = output_names(paths, settings.extension)
    check_inputs_spared(out, inputs, paths, names)
    check_existing_files_are_runs(out, names, len(paths), summary)
    if log_json is not None:
        check_log_spared(log_json, out, paths, names)
    group.agree("the inputs and settings", job_fingerprint(paths, names, shash, batch_size, resume, devices))
    items = [Item(i, p, n) for i, (p, n) in enumerate(zip(paths, names))]
    records: list[dict[str, Any] | None] = [None] * len(items)
    events = Progress(len(items), bar=progress, log=log, log_json=log_json, enabled=group.is_main)
    if hasattr(engine, "listener"):
        engine.listener = events
    batches = BatchRunner(out, settings, shash, engine, Scorer(model), log, events)
    try:
        return _run(batches, items, records, out, model, settings, batch_size, resume, summary, group, events, log,
                    overlap)
    except BaseException as exc:
        events.abort(exc)
        raise
    finally:
        if hasattr(engine, "listener"):
            engine.listener = None


def _run(batches: BatchRunner, items: list[Item], records: list, out, model, settings: Settings, batch_size: int,
         resume: bool, summary: bool, group, events: Progress, log: Callable[[str], None],
         overlap: bool = True) -> RunResult:
    """The passes of :func:`run` once the inputs, the engine and the reporting are set up."""
    # Pass 1: read every input once (shape, hash), each process its part; refuse the bad ones, alike on
    # every process. Pixels are re-read per batch so that memory stays bounded by one batch.
    ok: list[Item] = []
    probes = group.gather_parts([probe_input(it.path, model.min_size) for it in group.part(items)])
    refused = []
    for it, probe in zip(items, probes):
        it.sha = probe["sha256"]
        if probe["error"] is not None:
            records[it.index] = batches.refusal(it, probe["error"], log=group.is_main)
            refused.append(records[it.index])
            continue
        it.shape, it.seed = tuple(probe["shape"]), image_seed(it.sha, settings.seed)
        ok.append(it)
    events.images(refused, instant=True)
    if not ok:
        events.close(refused, exitcodes.USAGE)
        raise QcamoError(f"no valid input image ({len(refused)} refused); nothing was written")
    # Every process removes stale temporary files here, before any process can write an output: the
    # first output is written after the collective calls below, which every process makes after this.
    shash = batches.shash
    prepare_output_dir(out)

    previous = group.broadcast(load_previous_records(out) if resume and group.is_main else {})
    # After that collective (every process has swept its stale temporary files, so none deletes this
    # one's) and before any file is written: the names this run may write are a run's, not the user's.
    if group.is_main:
        write_manifest(out, [it.name for it in items], len(items), summary)
    plan = plan_batches(ok, batch_size)
    reuse = reuse_flags(plan, previous, shash, out, group)
    reused = processed = 0

    def complete(batch, part, shown):
        """The records of a batch whose host work is done: every process learns them; checkpoint.

        ``shown``: the batch reached the engine (its progress was shown); else every input was refused.
        """
        nonlocal processed
        for it, rec in zip(batch, group.gather_parts(part)):
            records[it.index] = rec
            processed += int(rec["error"] is None)
        events.images([records[it.index] for it in batch], instant=not shown)
        if group.is_main:  # checkpoint: the reports always describe complete outputs only
            report_mod.write_reports(out, finished_records(records, previous, resume))
            _crash_point("report")

    # One batch's host work (scoring, the real re-encoders, writing) runs in a worker thread while the
    # next batch is on the device; at most one batch waits there, so memory stays bounded and records
    # and reports keep their order.
    with (ThreadPoolExecutor(max_workers=1, thread_name_prefix="qcamo-host") if overlap else _Inline()) as host:
        pending = None
        for (shape, b, batch), reusable in zip(plan, reuse):
            if reusable:
                for it in batch:
                    records[it.index] = dict(previous[os.fspath(it.path)])
                reused += len(batch)
                events.images([records[it.index] for it in batch], instant=True)
                continue
            # Each process attacks its part (every process makes the engine call, even with an empty
            # part) and everyone learns the records of the whole batch.
            # On Ctrl-C here the batch in the worker still finishes its files (the executor waits for
            # it), but its records are not reported: its re-encoder children got the signal too, so
            # they may read as failures; --resume redoes that batch.
            attacked = batches.attack(group.part(batch), shape, group.part_size(b), b, collective=group.count > 1,
                                      batch_images=len(batch))
            if pending is not None:
                complete(pending[0], pending[1].result(), pending[2])
            pending = (batch, host.submit(batches.finish, attacked), attacked.shown)
        if pending is not None:
            complete(pending[0], pending[1].result(), pending[2])

    final = [r for r in records if r is not None]
    if group.is_main:
        report_mod.write_reports(out, final)
        if summary and any(r.get("output") for r in final):
            try:
                report_mod.write_summary(out / SUMMARY_PNG, final, target=settings.target)
            except Exception as exc:  # a plot must never lose a finished run
                log(f"qcamo: warning: summary plot not written ({type(exc).__name__}: {exc})")
    failed = sum(r["error"] is not None for r in final)
    result = RunResult(final, processed, reused, failed)
    events.close(final, result.exit_code)
    return result


class _Inline:
    """Stands for the host worker when ``overlap=False``: each job runs at once, in the caller's thread."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - raised again by result(), as a worker's would be
            future.set_exception(exc)  # (Ctrl-C and SystemExit propagate at once)
        return future


def _stderr_log(progress: bool) -> Callable[[str], None]:
    def log(msg: str) -> None:
        if progress:
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr)

    return log
