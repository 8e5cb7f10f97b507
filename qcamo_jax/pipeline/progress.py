"""What a run tells the person (a bar on stderr) and the script (``--log-json`` events) while it goes.

Data contract: :class:`Progress` receives the run's events - a shape's compilation starting and
ending, a batch starting, *units* of work done inside a batch (one per model evaluation of the
compiled program, reported from the device by :func:`jax.debug.callback`, see
:class:`~qcamo_jax.pipeline.engine.AttackEngine`), records of finished or refused images - and turns
them into

* a tqdm bar in images (fractional inside a batch: ``units done / units expected`` of the batch's
  images) with rate and ETA, compilation time excluded from the ETA, when stderr is a terminal; when it
  is not (a log file, a pipe) no bar is drawn (its carriage-return redraws would fill the log) and a
  plain line is printed instead each time images finish (``qcamo: 8/32 images done, about 5 min left``);
* one stderr line per compilation (with its duration, and whether it came from the persistent compile
  cache, :mod:`qcamo_jax.compile_cache`) and per refused input;
* JSON lines in ``log_json`` (one object per line, ``"event"`` and ``"time"`` (s since the run
  started) in each): ``start``, ``compile_start``, ``compile_end`` (``seconds``; ``cache_hits`` and
  ``cache_misses``: programs loaded from and missing in the persistent cache), ``progress`` (at most every 10% of
  a batch), ``image_done``, ``image_failed``, ``end``;
* at the end, a table (under 100 columns) of the images that did not reach the target.

Only the main process of a multi-host run reports; the others get ``enabled=False``.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from qcamo_jax import compile_cache
from qcamo_jax.errors import QcamoError
from qcamo_jax.record import reached_target

#: In-batch ``progress`` events are written each time the batch crosses another tenth.
PROGRESS_STEPS = 10
#: Width limit of the final table (the project's rule for terminal tables).
TABLE_COLUMNS = 100


class Progress:
    """A run's progress, for a person (``bar``) and for scripts (``log_json``).

    Args:
      total: number of input images.
      bar: show progress (the tqdm bar, or plain lines on a stderr that is not a terminal) and the compile
        lines on stderr.
      log: where one-line messages go (refusals, compile lines, the final table).
      log_json: path of the JSON-lines event log, or ``None``.
      enabled: ``False`` on the non-main processes of a multi-host run: nothing is shown or written.
      terminal: whether stderr is a terminal (the bar) or not (plain lines); ``None``: ask stderr.
    """

    def __init__(self, total: int, *, bar: bool = True, log: Callable[[str], None] | None = None,
                 log_json: str | os.PathLike | None = None, enabled: bool = True, terminal: bool | None = None):
        from tqdm import tqdm

        self.enabled = enabled
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.show = bar and enabled
        self.terminal = _is_terminal(sys.stderr) if terminal is None else bool(terminal)
        self._t0 = time.perf_counter()
        self._lock = threading.Lock()
        self._json = None
        if log_json and enabled:
            try:
                self._json = open(log_json, "a", encoding="utf-8")
            except OSError as exc:
                raise QcamoError(f"cannot write the --log-json file ({exc.strerror or exc})", log_json) from None
        self._bar = tqdm(total=total, unit="img", desc="attack", disable=not (self.show and self.terminal), file=sys.stderr,
                         dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.1f}/{total} img [{elapsed}<{remaining}]")
        self.total = total
        self.done = 0.0  # images finished (whole batches)
        self._batch_images = 0
        self._batch_units = 1
        self._awaiting: collections.deque[float] = collections.deque()  # shown parts of batches without records
        self._units = 0
        self._shown_in_batch = 0.0
        self._next_event = 1
        self._compile_t0 = 0.0
        self._compile_seconds = 0.0
        self._cache_t0 = {"hits": 0, "misses": 0}
        self._instant = 0  # images done without attack time (refused up front, reused)
        self._compiling: tuple | None = None
        self.closed = False
        self.event("start", images=total)

    # -- events ---------------------------------------------------------------------------------

    def event(self, kind: str, **fields: Any) -> None:
        """Write one JSON line ``{"event": kind, "time": seconds, **fields}`` (if ``log_json`` was given)."""
        if self._json is None:
            return
        line = json.dumps({"event": kind, "time": round(time.perf_counter() - self._t0, 3), **fields}, default=str)
        with self._lock:
            self._json.write(line + "\n")
            self._json.flush()

    @property
    def wants_units(self) -> bool:
        """Whether anything shows the units inside a batch: the bar on a terminal, or ``--log-json``'s
        ``progress`` events. Without either the engine compiles its program without the unit callbacks,
        and the persistent compilation cache can keep it (:class:`~qcamo_jax.pipeline.engine.AttackEngine`)."""
        return self.enabled and ((self.show and self.terminal) or self._json is not None)

    def message(self, msg: str) -> None:
        """A line for the person, printed above the bar (not in ``--quiet`` mode)."""
        if self.show:
            self._bar.write(msg, file=sys.stderr)

    def compile_start(self, shape: Sequence[int], batch: int) -> None:
        """A new shape is about to be compiled; it ends at the program's first unit (or the batch's end)."""
        self._compiling = (tuple(shape), int(batch))
        self._compile_t0 = time.perf_counter()
        self._cache_t0 = compile_cache.counts()
        # Only a program without the unit callbacks can come from the compile cache (AttackEngine).
        reuse = "" if self.wants_units else ", unless compiled by an earlier run"
        self.message(f"qcamo: compiling the attack for {shape[1]} x {shape[0]} (W x H) images, batch {batch} "
                     f"(once per image size; minutes for large images{reuse})...")
        self.event("compile_start", width=int(shape[1]), height=int(shape[0]), batch=int(batch))

    def compile_end(self, shape: Sequence[int], batch: int) -> None:
        self._compiling = None
        seconds = time.perf_counter() - self._compile_t0
        self._compile_seconds += seconds
        # Programs loaded from the persistent compilation cache (an earlier run compiled them) and compiled.
        now = compile_cache.counts()
        hits, misses = (now[k] - self._cache_t0[k] for k in ("hits", "misses"))
        self.message(f"qcamo: compiled in {seconds:.1f} s" + (" (from the compile cache of an earlier run)"
                                                               if hits and not misses else ""))
        self.event("compile_end", width=int(shape[1]), height=int(shape[0]), batch=int(batch), seconds=round(seconds, 3),
                   cache_hits=hits, cache_misses=misses)
        if self.show and self.terminal:
            self._bar.unpause()  # the ETA counts attack time only, not the compilation

    def batch_start(self, images: int, units: int) -> None:
        """A batch of ``images`` real images starts; the engine will report about ``units`` units for it."""
        with self._lock:
            if self._batch_images:  # the previous batch's records are not in yet (its host work overlaps)
                self._awaiting.append(self._shown_in_batch)
            self._batch_images, self._batch_units = images, max(1, int(units))
            self._units, self._shown_in_batch, self._next_event = 0, 0.0, 1

    def units(self, n: int = 1) -> None:
        """``n`` units of the current batch are done (called from the device callback's thread)."""
        if self._compiling is not None:  # the program's first unit: compilation is over
            self.compile_end(*self._compiling)
        with self._lock:
            self._units += n
            # Never show a batch as finished before its records exist: cap just below its images.
            frac = min(self._units / self._batch_units, 0.99)
            shown = frac * self._batch_images
            moved, self._shown_in_batch = shown > self._shown_in_batch, shown
            crossed = frac * PROGRESS_STEPS >= self._next_event
            if crossed:
                self._next_event = int(frac * PROGRESS_STEPS) + 1
            worked = self._worked()
            if moved:
                self._show(worked)
        if crossed:
            self.event("progress", images_done=round(worked, 3), images=self.total,
                       batch_fraction=round(frac, 3), eta_s=self._eta(worked))

    def images(self, records: Sequence[Mapping[str, Any]], *, instant: bool = False) -> None:
        """Images finished (attacked, reused or refused): their events, and the bar set to whole images.

        ``instant``: they took no attack time (refused when probed, or reused): the ETA leaves them out.
        """
        if not records:
            return
        if instant:
            self._instant += len(records)
        if self._compiling is not None:  # an engine that reports no units
            self.compile_end(*self._compiling)
        with self._lock:
            # Their batch's shown part becomes whole images (none was shown for reused or refused ones).
            if not instant and self._awaiting:  # the oldest batch still waiting for its records
                self._awaiting.popleft()
            elif not instant:  # the batch on the device
                self._shown_in_batch, self._batch_images = 0.0, 0
            self.done += len(records)
            worked = self._worked()
            self._show(worked)
        if self.show and not self.terminal and not instant:  # the bar's place in a log: one line per batch
            eta = self._eta(worked)
            left = "" if eta is None or self.done >= self.total else f", about {_duration(eta)} left"
            self.message(f"qcamo: {self.done:.0f}/{self.total} images done{left}")
        for r in records:
            if r.get("error") is not None:
                self.event("image_failed", path=r.get("path"), error=r.get("error"))
            else:
                self.event("image_done", path=r.get("path"), output=r.get("output"),
                           original_score=r.get("original_score"), final_score=r.get("final_score"),
                           worst_score=r.get("worst_score"), worst_reencoder=r.get("worst_reencoder"),
                           reached_target=reached_target(r))
        self.event("progress", images_done=round(worked, 3), images=self.total, batch_fraction=1.0,
                   eta_s=self._eta(worked))

    def _show(self, worked: float) -> None:
        """Put the bar at ``worked`` images (call with the lock held).

        Set, not summed: adding the fractional steps up drifts by float round-off, and a bar even 1e-14
        past its total makes tqdm warn ("clamping frac to range [0, 1]") and show a negative ETA at the
        end of a run. ``update(0)`` then redraws and feeds tqdm's rate the change since its last draw.
        """
        self._bar.n = min(worked, self.total)
        self._bar.update(0)

    def _worked(self) -> float:
        """Images done, whole and in part: finished ones, the shown parts of batches waiting for their
        records and of the batch on the device (call with the lock held). Never decreases."""
        return self.done + sum(self._awaiting) + self._shown_in_batch

    def _eta(self, worked: float) -> float | None:
        """Seconds left at the average rate so far, compilation excluded (``None`` before any progress).

        ``worked``: :meth:`_worked`, read under the lock.
        """
        worked = worked - self._instant
        elapsed = time.perf_counter() - self._t0 - self._compile_seconds
        if worked <= 0 or elapsed <= 0:
            return None
        return round(elapsed * (self.total - self._instant - worked) / worked, 1)

    def close(self, records: Sequence[Mapping[str, Any]], exit_code: int) -> None:
        """Close the bar, print the table of images that missed the target, write the ``end`` event."""
        if self.closed:
            return
        self.closed = True
        self._bar.close()
        missed = [r for r in records if r.get("error") is None and not reached_target(r)]
        if missed and self.show:
            for line in missed_table(missed, target=missed[0].get("target")):
                self.log(line)
        self.event("end", exit_code=int(exit_code), images=len(records), missed=len(missed),
                   failed=sum(r.get("error") is not None for r in records))
        if self._json is not None:
            self._json.close()
            self._json = None

    def abort(self, exc: BaseException) -> None:
        """The run stopped on an exception: close the bar and the log (``end`` event with ``error``)."""
        if self.closed:
            return
        self.closed = True
        self._bar.close()
        self.event("end", error=f"{type(exc).__name__}: {exc}")
        if self._json is not None:
            self._json.close()
            self._json = None


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _duration(seconds: float) -> str:
    """``42 s``, ``5 min``, ``2.5 h``: an ETA for a log line."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def missed_table(records: Sequence[Mapping[str, Any]], target: float | None) -> list[str]:
    """Lines of a table (at most :data:`TABLE_COLUMNS` wide) of the images that did not reach ``target``.

    Columns: the output's file name (shortened in the middle if long), the score of the original, as
    saved and the worst over the re-encoder set, and which check missed (``saved``, the worst
    re-encoder's name, ``limit`` for the distortion limit, or the error).
    """
    def fmt(v):
        return "-" if v is None else f"{v:.2f}"

    rows = []
    for r in records:
        why = _missed(r)
        name = Path(r.get("output") or r.get("path") or "?").name
        rows.append((name, fmt(r.get("original_score")), fmt(r.get("final_score")), fmt(r.get("worst_score")),
                     ",".join(why)))
    fixed = 4 * 10 + 10  # four numeric/short columns of 8 plus separators, and the "missed" column
    width = max(8, min(max(len(r[0]) for r in rows), TABLE_COLUMNS - fixed))
    short = lambda s: s if len(s) <= width else s[: (width - 3) // 2] + "..." + s[-(width - 3 - (width - 3) // 2):]  # noqa: E731
    head = f"qcamo: {len(rows)} image(s) not below T={target:g}:" if target is not None else \
        f"qcamo: {len(rows)} image(s) not below T:"
    lines = [head, f"  {'image':<{width}}  {'original':>8}  {'saved':>8}  {'worst':>8}  missed"]
    lines += [f"  {short(n):<{width}}  {o:>8}  {s:>8}  {j:>8}  {w}" for n, o, s, j, w in rows]
    return lines


def _missed(r: Mapping[str, Any]) -> list[str]:
    """Which checks of a record failed: ``saved``, the re-encoders above its target, ``limit``, ``error``."""
    if r.get("error") is not None:
        return ["error"]
    why = [] if r.get("success_saved") is True else ["saved"]
    target = r.get("target")
    after = r.get("reencoded_scores") or {}
    above = [n for n, v in after.items() if target is None or v is None or v >= target]
    if above:
        why.append(above[0] if len(above) == 1 else f"{above[0]}+{len(above) - 1}")
    if r.get("within_limit") is False:
        why.append("limit")
    return why or ["?"]
