"""The files a run writes: the output folder, output names, the bytes of output files.

Data contract: the output folder holds one file per attacked input, named by :func:`output_names`
(``<stem>.jpg`` or ``<stem>.png``, never a :data:`RESERVED_STEMS` stem nor a summary page's, ``summary-2``...), plus :data:`REPORT_JSON`,
:data:`REPORT_CSV` and :data:`SUMMARY_PNG`. Every file is written whole or not at all
(:func:`qcamo_jax.fileio.atomic_write_bytes`); a run killed while writing leaves ``.<name>.<random>.tmp``
files that :func:`prepare_output_dir` removes. Pixels are ``uint8 [H, W, 3]`` RGB; :func:`encode_png`
is deterministic, and :func:`decode_output` decodes as Pillow (libjpeg-turbo, ISLOW) does. Errors
are :class:`qcamo_jax.errors.QcamoError` with one line naming the path.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from qcamo_jax import fileio, imageio, summary_plot
from qcamo_jax.discovery import RUN_MANIFEST, resolve_path
from qcamo_jax.errors import QcamoError
from qcamo_jax.report import read_records
from qcamo_jax.summary_plot import is_page_stem, page_path

#: Output stems reserved for the run's own files.
RESERVED_STEMS = frozenset({"report", "summary"})
REPORT_JSON = "report.json"
REPORT_CSV = "report.csv"
SUMMARY_PNG = "summary.png"


def output_names(paths: Sequence[Path], extension: str) -> list[str]:
    """A distinct output file name per input: ``<stem><ext>``, made unique where stems collide.

    Two inputs with the same stem (``a/x.png`` and ``b/x.jpg``, or a stem equal to a report's) both get a
    suffix made of the first 8 hex digits of the SHA-256 of their resolved path, so neither output
    overwrites the other and names do not depend on the order of the inputs.
    """
    stems = [p.stem or "image" for p in paths]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s.lower()] = counts.get(s.lower(), 0) + 1
    names = []
    for p, s in zip(paths, stems):
        if counts[s.lower()] > 1 or s.lower() in RESERVED_STEMS or is_page_stem(s.lower()):
            s = f"{s}-{hashlib.sha256(str(resolve_path(p)).encode()).hexdigest()[:8]}"
        names.append(s + extension)
    return names


def check_output_dir(out_dir: str | os.PathLike) -> Path:
    """Check that ``out_dir`` is, or could be created as, a writable folder, without creating anything.

    A run refuses a bad output path before its heavy work, but creates the folder only once it has a
    valid input (:func:`prepare_output_dir`), so a run with nothing to do leaves nothing behind.

    Raises:
      QcamoError: the path is a file, a parent of it is a file, or the folder (or the existing
        parent it would be created in) is not writable.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise QcamoError("output path exists and is not a folder", out)
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise QcamoError(f"cannot create output folder ({parent} is not a folder)", out)
    if not os.access(parent, os.W_OK | os.X_OK):
        what = "output folder is not writable" if parent == out else f"cannot create output folder (no write access to {parent})"
        raise QcamoError(what, out)
    return out


def check_inputs_spared(out: Path, specs: Sequence[str | os.PathLike], paths: Sequence[Path],
                        names: Sequence[str]) -> None:
    """Refuse a run that could overwrite one of its own inputs, before anything is written.

    Two ways: an input folder that is the output folder itself (its outputs would be written among the
    inputs, and read back as inputs by the next run), and any input file that a file of the run would
    replace (an output ``<stem>.jpg`` next to the input ``<stem>.jpg``, or an input called
    ``report.json`` / ``summary.png`` / ``summary-2.png`` in the output folder). A folder *inside* the
    output folder, or the output folder inside an input folder, is fine: discovery skips the output
    folder and the names cannot meet.

    Args:
      out: the output folder (may not exist yet).
      specs: the inputs as given (files, folders, globs).
      paths: the discovered input files; ``names``: their output file names (:func:`output_names`).

    Raises:
      QcamoError: naming the output folder and the input at risk.
    """
    out_r = resolve_path(Path(out))
    for spec in specs:
        if Path(spec).is_dir() and resolve_path(Path(spec)) == out_r:
            raise QcamoError("is also an input folder: outputs would be written among the inputs (and taken as "
                             "inputs by the next run); choose another --out", out)
    inputs = {resolve_path(Path(p)): Path(p) for p in paths}
    for name in names:
        hit = inputs.get(out_r / name)
        if hit is not None:
            raise QcamoError(f"the output {name} would replace the input {hit}; choose another --out", out)
    for r, p in inputs.items():
        if _is_report_of(r, out_r):
            raise QcamoError(f"the run's own {r.name} would replace the input {p}; choose another --out", out)


def run_file_names(names: Sequence[str], n_inputs: int, summary: bool = True) -> list[str]:
    """Every file name a run of ``n_inputs`` inputs with outputs ``names`` may write in its output folder:
    the outputs, the two reports and, with ``summary``, the summary pages
    (:data:`~qcamo_jax.summary_plot.PER_PAGE` images each)."""
    pages = max(1, -(-int(n_inputs) // summary_plot.PER_PAGE)) if summary else 0
    return [*names, REPORT_JSON, REPORT_CSV, *(page_path(SUMMARY_PNG, k).name for k in range(1, pages + 1))]


#: A refusal names at most this many of the files at risk (and counts the rest).
_NAMED_AT_MOST = 5
#: Fields every record of a qcamo report has (qcamo_jax.record.FIELDS).
_RUN_FIELDS = frozenset({"path", "output", "error", "input_sha256", "settings_hash"})


def earlier_run_files(out: Path) -> set[str]:
    """Names of the files earlier runs wrote (or were about to write) in ``out``: those a run may replace.

    The names in ``out/.qcamo-files`` (:func:`write_manifest`); for a folder a run filled before that
    list existed (or whose list is unreadable), the outputs its valid ``report.json`` lists, with the
    reports and summary pages.
    """
    names: set[str] = set()
    try:
        data = json.loads((out / RUN_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("files"), list):
        return {n for n in data["files"] if isinstance(n, str)}
    records = read_records(out)
    # A qcamo report, not any JSON list of objects with a "path" (a photo catalogue's report.json): every
    # record carries the run's own fields.
    if records and all(_RUN_FIELDS <= r.keys() for r in records):
        names.update(Path(r["output"]).name for r in records if isinstance(r.get("output"), str))
        names.update((REPORT_JSON, REPORT_CSV))
        names.update(f for f in os.listdir(out) if f.lower().endswith(".png") and is_page_stem(Path(f).stem))
    return names


def check_existing_files_are_runs(out: Path, names: Sequence[str], n_inputs: int, summary: bool = True) -> None:
    """Refuse, before anything is written, a run that would replace a file no earlier run wrote in ``out``.

    Outputs and reports are written over the files of an earlier run (a re-run replaces them; ``--resume``
    keeps what it can), but a file of the user's own that happens to have an output's name (``photo.jpg``
    beside the input ``photo.png`` in ``--out``) is never replaced: the run stops here, naming every such
    file (the first :data:`_NAMED_AT_MOST`). ``summary``: the run writes summary pages.

    Raises:
      QcamoError: naming the output folder and the files at risk.
    """
    if not out.is_dir():
        return
    manifest = out / RUN_MANIFEST
    if manifest.exists() and not manifest.is_file():
        raise QcamoError(f"{RUN_MANIFEST} there is not a file (a run keeps the list of its file names in it); "
                         f"move it or choose another --out", out)
    existing = [n for n in run_file_names(names, n_inputs, summary) if (out / n).exists() or (out / n).is_symlink()]
    if not existing:
        return
    ours = earlier_run_files(out)
    foreign = [n for n in existing if n not in ours]
    if len(foreign) == 1:
        raise QcamoError(f"the run would replace {foreign[0]}, a file no earlier qcamo run wrote there; move it "
                         f"or choose another --out", out)
    if foreign:
        shown = ", ".join(foreign[:_NAMED_AT_MOST]) + (f" and {len(foreign) - _NAMED_AT_MOST} more"
                                                         if len(foreign) > _NAMED_AT_MOST else "")
        raise QcamoError(f"the run would replace {len(foreign)} files no earlier qcamo run wrote there ({shown}); "
                         f"move them or choose another --out", out)


def write_manifest(out: Path, names: Sequence[str], n_inputs: int, summary: bool = True) -> None:
    """Add this run's file names (:func:`run_file_names`) to ``out/.qcamo-files``, before it writes any.

    A run killed before its first report still leaves this list, so the next run (or ``--resume``) knows
    the files it finds are a run's, not the user's (:func:`check_existing_files_are_runs`). Written
    atomically; names of earlier runs are kept.
    """
    known = sorted(earlier_run_files(out) | set(run_file_names(names, n_inputs, summary)))
    fileio.atomic_write_bytes(out / RUN_MANIFEST, (json.dumps({"files": known}, ensure_ascii=False) + "\n").encode())


def _is_report_of(path: Path, out: Path) -> bool:
    """Whether resolved ``path`` is one of the run's own files in resolved ``out`` (report.json,
    report.csv, a summary page, .qcamo-files)."""
    return path.parent == out and (path.name in (REPORT_JSON, REPORT_CSV, RUN_MANIFEST) or
                                   (path.suffix.lower() == ".png" and is_page_stem(path.stem)))


def check_log_spared(log_json: str | os.PathLike, out: Path, paths: Sequence[Path], names: Sequence[str]) -> None:
    """Refuse a ``--log-json`` path that would write into an input or clash with the run's own files.

    The event log is opened for appending before anything else is written, so without this check
    ``--log-json photo.png`` would append JSON lines to the photo, and ``--log-json`` equal to ``--out``
    would create a file where the output folder belongs. Refused: the output folder itself, an input
    file, a file the run writes in the output folder (an output, a report, a summary page), and an
    existing file that is not a JSON-lines log (its first byte is not ``{``), since appending would
    change what it holds.

    Raises:
      QcamoError: naming the log path and what it would damage.
    """
    log_r = resolve_path(Path(log_json))
    out_r = resolve_path(Path(out))
    if log_r == out_r:
        raise QcamoError("--log-json is the output folder; give the event log another name", log_json)
    for p in paths:
        if resolve_path(Path(p)) == log_r:
            raise QcamoError(f"--log-json would append to the input {p}; give the event log another name", log_json)
    if (log_r.parent == out_r and log_r.name in names) or _is_report_of(log_r, out_r):
        raise QcamoError(f"--log-json would be overwritten by the run's own {log_r.name}; give the event log "
                         "another name or folder", log_json)
    try:
        with open(log_r, "rb") as f:
            head = f.read(1)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise QcamoError(f"cannot read the --log-json file ({exc.strerror or exc})", log_json) from None
    if head not in (b"", b"{"):
        raise QcamoError("--log-json exists and is not a JSON-lines event log (appending would change it); "
                         "give the event log another name", log_json)


def prepare_output_dir(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` if needed and check it is a writable folder; remove stale temporary files.

    Raises:
      QcamoError: the path is a file, or cannot be created, or is not writable.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise QcamoError("output path exists and is not a folder", out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise QcamoError(f"cannot create output folder ({exc.strerror or exc})", out) from None
    # The probe is an unnamed file (O_TMPFILE; elsewhere a "tmpXXXX" name unlinked at once): a named
    # ".*.tmp" probe could be swept as a leftover by another process of the same run (below) between
    # its creation and removal, and that process's run would then fail as "not writable".
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise QcamoError(f"output folder is not writable ({exc.strerror or exc})", out) from None
    # Leftovers of a run killed while writing: fileio.atomic_write's ".<name>.<random>.tmp" files.
    for leftover in out.glob(".*.tmp"):
        try:
            leftover.unlink()
        except OSError:
            pass
    return out


def encode_png(pixels: np.ndarray) -> bytes:
    """Lossless PNG bytes of ``uint8 [H, W, 3]`` pixels (no metadata, deterministic)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8), "RGB").save(buf, "PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def decode_output(data: bytes) -> np.ndarray:
    """Pixels ``uint8 [H, W, 3]`` of an output file's bytes, as a standard decoder (libjpeg via Pillow) gives."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return imageio.to_rgb_array(im)


#: Test hook: ``QCAMO_CRASH_AT=output:N`` (or ``report:N``) makes the process SIGKILL itself right after
#: its N-th output file (report checkpoint) is written, to test kill -9 at exact points of a run.
CRASH_ENV = "QCAMO_CRASH_AT"
_crash_counts: dict[str, int] = {}


def _crash_point(kind: str) -> None:
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    want, _, n = spec.partition(":")
    if want != kind:
        return
    _crash_counts[kind] = _crash_counts.get(kind, 0) + 1
    if _crash_counts[kind] == int(n or 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
