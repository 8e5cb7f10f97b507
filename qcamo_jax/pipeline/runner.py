"""The run loop: probe the inputs, plan the batches, attack each batch, checkpoint the reports.

Data contract: :func:`run` takes what the user typed (files, folders, globs), an output folder, a
quality model and :class:`~qcamo_jax.pipeline.settings.Settings`, and returns a :class:`RunResult`
with one record (:mod:`qcamo_jax.record`) per input in input order. It ties the other modules of
:mod:`qcamo_jax.pipeline` together and holds no rule of its own beyond their order: pass 1 probes
every input once (:mod:`~qcamo_jax.pipeline.inputs`), the plan groups them by shape
(:mod:`~qcamo_jax.pipeline.plan`), ``--resume`` keeps what it can (:mod:`~qcamo_jax.pipeline.resume`),
each batch is attacked and written (:mod:`~qcamo_jax.pipeline.batch`), and after every batch the
reports are rewritten atomically (:mod:`qcamo_jax.report`).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, NamedTuple, Sequence

from qcamo_jax import report as report_mod
from qcamo_jax.errors import QcamoError
from qcamo_jax.pipeline.batch import BatchRunner
from qcamo_jax.pipeline.engine import Engine, make_engine
from qcamo_jax.pipeline.inputs import discover_inputs, probe_input
from qcamo_jax.pipeline.outputs import SUMMARY_PNG, _crash_point, output_names, prepare_output_dir
from qcamo_jax.pipeline.plan import Item, job_fingerprint, plan_batches
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
        """0 only if every image was processed (attacked or reused), else 1."""
        return 0 if self.failed == 0 and self.records else 1


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
      progress: show a tqdm progress bar (images/s) on stderr (process 0 only).
      summary: write ``summary.png``.
      log: where one-line messages (refusals, warnings) go; default stderr.

    Returns:
      :class:`RunResult`; ``exit_code`` is 0 only if every image was processed.

    Raises:
      QcamoError: the output folder is unusable, or no inputs were given, or the processes of a
        multi-process run were given different inputs or settings.
    """
    from qcamo_jax.multihost import ProcessGroup

    group = ProcessGroup.current()
    # Every process removes stale temporary files here, before its first collective call below: no
    # process of the job can be writing an output yet.
    out = prepare_output_dir(out_dir)
    paths = discover_inputs(inputs, exclude=out)
    if not paths:
        raise QcamoError("no input images found in " + " ".join(map(os.fspath, inputs)))
    if log is None:
        log = _stderr_log(progress)
    if engine is None:
        engine = make_engine(model, settings, devices=devices, batch_size=batch_size)
    shash = settings_hash(settings, model_identity(model), engine.identity)
    names = output_names(paths, settings.extension)
    group.agree("the inputs and settings", job_fingerprint(paths, names, shash, batch_size, resume, devices))
    items = [Item(i, p, n) for i, (p, n) in enumerate(zip(paths, names))]
    records: list[dict[str, Any] | None] = [None] * len(items)
    batches = BatchRunner(out, settings, shash, engine, Scorer(model), log)
    bar = _progress_bar(len(items), progress and group.is_main)

    # Pass 1: read every input once (shape, hash), each process its part; refuse the bad ones, alike on
    # every process. Pixels are re-read per batch so that memory stays bounded by one batch.
    ok: list[Item] = []
    probes = group.gather_parts([probe_input(it.path, model.min_size) for it in group.part(items)])
    for it, probe in zip(items, probes):
        it.sha = probe["sha256"]
        if probe["error"] is not None:
            records[it.index] = batches.refusal(it, probe["error"], log=group.is_main)
            bar.update(1)
            continue
        it.shape, it.seed = tuple(probe["shape"]), image_seed(it.sha, settings.seed)
        ok.append(it)

    previous = group.broadcast(load_previous_records(out) if resume and group.is_main else {})
    plan = plan_batches(ok, batch_size)
    reuse = reuse_flags(plan, previous, shash, out, group)
    reused = processed = 0
    for (shape, b, batch), reusable in zip(plan, reuse):
        if reusable:
            for it in batch:
                records[it.index] = dict(previous[os.fspath(it.path)])
            reused += len(batch)
            bar.update(len(batch))
            continue
        # Each process attacks its part (every process makes the engine call, even with an empty part)
        # and everyone learns the records of the whole batch.
        part = batches.attack_part(group.part(batch), shape, group.part_size(b), b, collective=group.count > 1)
        for it, rec in zip(batch, group.gather_parts(part)):
            records[it.index] = rec
            processed += int(rec["error"] is None)
        bar.update(len(batch))
        if group.is_main:  # checkpoint: the reports always describe complete outputs only
            report_mod.write_reports(out, finished_records(records, previous, resume))
            _crash_point("report")
    bar.close()

    final = [r for r in records if r is not None]
    if group.is_main:
        report_mod.write_reports(out, final)
        if summary:
            try:
                report_mod.write_summary(out / SUMMARY_PNG, final, target=settings.target)
            except Exception as exc:  # a plot must never lose a finished run
                log(f"qcamo: warning: summary plot not written ({type(exc).__name__}: {exc})")
    failed = sum(r["error"] is not None for r in final)
    return RunResult(final, processed, reused, failed)


def _stderr_log(progress: bool) -> Callable[[str], None]:
    def log(msg: str) -> None:
        if progress:
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr)

    return log


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="attack", disable=not enabled, file=sys.stderr, dynamic_ncols=True)
