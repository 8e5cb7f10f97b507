"""The attack pipeline: input files -> batched attack + quantizer -> adversarial files + reports.

This is everything ``qcamo attack`` does, as an importable library:

1. :func:`discover_inputs` expands files, folders (recursively, image files only: :mod:`qcamo_jax.discovery`)
   and globs into a sorted, de-duplicated list of paths; :func:`output_names` gives each a distinct output name.
2. Every input is read once (:func:`qcamo_jax.imageio.load_rgb`) to learn its shape and content hash;
   bad files become records with a one-line ``error`` and the rest goes on.
3. Images are grouped by shape (each shape compiles once) and cut into batches of a fixed size per
   group; the batches depend only on the set of inputs, never on what a previous run finished, so a
   resumed run recomputes a batch exactly as an uninterrupted run would.
4. The *engine* (:class:`Engine`; :func:`make_engine` builds the real one from
   :mod:`qcamo_jax.attacks` and :mod:`qcamo_jax.quantize`) turns ``uint8 [B, H, W, 3]`` images and
   one PRNG key per image into encoded files. The key of an image is derived from the SHA-256 of its
   bytes and ``--seed`` (not from its position), so results do not depend on batching or ordering.
5. Outputs are scored as saved and after quality-90 re-encoding with the reference encoder
   (:func:`reencode_reference`), and written atomically; after every batch the reports are rewritten
   atomically, so a run killed at any point leaves complete files only, and ``resume=True`` skips
   images whose output and record match (same input hash, same settings, same output hash).
6. In a multi-host job (one process per host), every process runs :func:`run` with the same arguments:
   the processes share the probing of step 2 so they plan the same batches, each attacks its part of
   every batch, and process 0 writes the reports (:mod:`qcamo_jax.multihost`).

Data contract: images are ``uint8 [H, W, 3]`` RGB pixels; scores are on the model's 0-100 scale.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Protocol, Sequence

import numpy as np
from PIL import Image

from qcamo_jax import fileio, imageio
from qcamo_jax.discovery import discover_inputs, resolve_path  # noqa: F401 (discover_inputs: public here too)
from qcamo_jax.errors import ImageFileError, QcamoError

#: Output stems reserved for the run's own files.
RESERVED_STEMS = frozenset({"report", "summary"})
REPORT_JSON = "report.json"
REPORT_CSV = "report.csv"
SUMMARY_PNG = "summary.png"
#: Quality of the reference re-encoding behind ``success_jpeg90`` (the MediaEval 2020 setting).
REFERENCE_QUALITY = 90
#: Encoder of that re-encoding (a :data:`qcamo_jax.jpeg.encoders.ENCODERS` name): ImageMagick-equivalent.
REFERENCE_ENCODER = "libjpeg6b-ifast-444"
METHODS = ("pgd", "fgsm", "ifgsm", "jpeg-pgd")
#: Default safety margin (score units): attack and quantizer aim below ``T - 1``, because the decoder
#: and re-encoder a file meets never equal the simulated ones exactly (a q90 re-encoding moved scores of
#: the quick-start photos by up to +0.2 with margin 0, enough to fail one of four).
DEFAULT_MARGIN = 1.0
QUANTIZERS = ("dct", "spatial", "none")


# ----------------------------------------------------------------------------------------------
# Settings.


@dataclasses.dataclass(frozen=True)
class Settings:
    """What an attack run computes; two runs with equal settings give equal outputs.

    Attributes:
      target: the score T to get below (0-100 scale).
      method: attack, one of :data:`METHODS`.
      quantize: ``"dct"`` (JPEG coefficients, ``.jpg``), ``"spatial"`` (8-bit pixels, ``.png``) or
        ``"none"`` (plain rounding of the attack, ``.png``).
      quality: JPEG quality of the ``dct`` quantizer's output file.
      seed: base seed; each image's key is derived from it and the image's content hash.
      attack_options: extra options of the attack and quantizer (see :func:`attack_config`).
      reference_encoder: encoder of the quality-90 re-encoding behind ``success_jpeg90``
        (see :func:`reencode_reference`).
    """

    target: float = 50.0
    method: str = "pgd"
    quantize: str = "dct"
    quality: int = 90
    seed: int = 0
    attack_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    reference_encoder: str = REFERENCE_ENCODER

    def __post_init__(self):
        if self.method not in METHODS:
            raise QcamoError(f"unknown --method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.quantize not in QUANTIZERS:
            raise QcamoError(f"unknown --quantize {self.quantize!r}; choose from {', '.join(QUANTIZERS)}")
        if not 1 <= int(self.quality) <= 100:
            raise QcamoError(f"--quality must be in 1..100, got {self.quality}")

    @property
    def extension(self) -> str:
        return ".jpg" if self.quantize == "dct" else ".png"

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["attack_options"] = dict(sorted(dict(self.attack_options).items()))
        return d


def settings_hash(settings: Settings, model_id: str, engine_id: str) -> str:
    """Short hash of everything that determines an output: settings, model identity, engine identity."""
    blob = json.dumps({"settings": settings.as_dict(), "model": model_id, "engine": engine_id}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def model_identity(model) -> str:
    """A string identifying a quality model's weights (its checkpoint metadata, sorted)."""
    return json.dumps(dict(sorted((str(k), str(v)) for k, v in dict(model.metadata).items())), sort_keys=True)


def image_seed(sha256_hex: str, seed: int) -> int:
    """The per-image seed: a 31-bit mix of the image's content hash and the run's base seed."""
    h = hashlib.sha256(f"{sha256_hex}:{int(seed)}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


# ----------------------------------------------------------------------------------------------
# Inputs and output names.


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
        if counts[s.lower()] > 1 or s.lower() in RESERVED_STEMS:
            s = f"{s}-{hashlib.sha256(str(resolve_path(p)).encode()).hexdigest()[:8]}"
        names.append(s + extension)
    return names


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
    try:
        fd, probe = tempfile.mkstemp(prefix=".qcamo-probe.", suffix=".tmp", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise QcamoError(f"output folder is not writable ({exc.strerror or exc})", out) from None
    # Leftovers of a run killed while writing: fileio.atomic_write's ".<name>.<random>.tmp" files.
    for leftover in out.glob(".*.tmp"):
        try:
            leftover.unlink()
        except OSError:
            pass
    return out


# ----------------------------------------------------------------------------------------------
# The engine seam: uint8 images -> encoded files.


class Encoded(NamedTuple):
    """One attacked image, encoded.

    Attributes:
      data: the bytes of the output file (``.jpg`` or ``.png``).
      extras: attack/quantizer details for the report (e.g. ``budget``, ``iterations``).
    """

    data: bytes
    extras: Mapping[str, Any]


class Engine(Protocol):
    """Turns a batch of images into encoded adversarial files.

    ``engine(images uint8 [B, H, W, 3], seeds int [B]) -> list of B Encoded``. ``identity`` is a string
    that changes whenever the outputs would (it enters the resume check). Output ``i`` must depend only
    on image ``i`` and seed ``i``.
    """

    identity: str

    def __call__(self, images: np.ndarray, seeds: np.ndarray) -> list[Encoded]: ...


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


def reencode_reference(pixels: np.ndarray, quality: int = REFERENCE_QUALITY, encoder: str = REFERENCE_ENCODER) -> np.ndarray:
    """The "slightly JPEG compressed" round trip behind ``success_jpeg90``: encode at ``quality``, decode.

    The default encoder, ``libjpeg6b-ifast-444``, is what ImageMagick's ``convert -quality 90`` does to a
    colour PNG (4:4:4, fast integer DCT; bit-identical files, see ``tests/test_pipeline.py``), run through
    jpeglib's bundled libjpeg so that the result does not depend on which ImageMagick is installed. It
    differs from ImageMagick only on images whose pixels are all gray, which ImageMagick writes as a
    one-component JPEG. Any name of :data:`qcamo_jax.jpeg.encoders.ENCODERS` works (``imagemagick``
    runs the real ``convert``). Decoding is Pillow's (libjpeg-turbo, ISLOW IDCT).

    Args:
      pixels: ``uint8 [H, W, 3]``.
      quality: IJG quality.
      encoder: encoder registry name.

    Returns:
      ``uint8 [H, W, 3]`` decoded pixels.
    """
    from qcamo_jax.jpeg import encoders

    if encoder not in encoders.ENCODERS:
        raise QcamoError(f"unknown reference encoder {encoder!r}; known: {', '.join(encoders.ENCODERS)}")
    try:
        return encoders.ENCODERS[encoder](np.ascontiguousarray(np.asarray(pixels, np.uint8)), int(quality)).pixels
    except encoders.EncoderUnavailable as exc:
        raise QcamoError(f"reference encoder {encoder!r} unavailable: {exc}") from None


# ----------------------------------------------------------------------------------------------
# Records and reports.

#: Columns of report.csv, in order (report.json objects carry the same keys).
FIELDS = (
    "path", "output", "error", "original_score", "final_score", "jpeg90_score", "success_saved", "success_jpeg90",
    "l2", "linf", "psnr", "ssim", "seconds", "height", "width", "target", "method", "quantize", "budget",
    "iterations", "input_sha256", "output_sha256", "seed", "settings_hash",
)


def empty_record(path: Path, settings: Settings) -> dict[str, Any]:
    rec = {k: None for k in FIELDS}
    rec.update(path=os.fspath(path), target=float(settings.target), method=settings.method, quantize=settings.quantize)
    return rec


def load_previous_records(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Records of a previous run in ``out_dir`` (by input path), or ``{}`` if there is no valid report."""
    p = out_dir / REPORT_JSON
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, list):
        return {}
    return {r["path"]: r for r in data if isinstance(r, dict) and isinstance(r.get("path"), str)}


def _reusable(rec: Mapping[str, Any] | None, sha: str, shash: str, out_dir: Path) -> bool:
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


# ----------------------------------------------------------------------------------------------
# Scoring and metrics (batched, one compile per shape).


class Scorer:
    """Batched model scoring of ``uint8`` images, jitted once and padded to a fixed batch size per shape."""

    def __init__(self, model, apply_fn: Callable | None = None):
        import jax
        import jax.numpy as jnp

        self.model = model
        self._fn = apply_fn or jax.jit(lambda v, x: model.apply(v, x.astype(jnp.float32)))

    def __call__(self, images: np.ndarray, batch: int) -> np.ndarray:
        images = np.asarray(images, np.uint8)
        n = images.shape[0]
        out = []
        for i in range(0, n, batch):
            chunk = images[i:i + batch]
            pad = batch - chunk.shape[0]
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)], 0)
            out.append(np.asarray(self._fn(self.model.variables, chunk))[: batch - pad])
        return np.concatenate(out).astype(np.float64)


def distortion(originals: np.ndarray, outputs: np.ndarray) -> list[dict[str, float | None]]:
    """L2 and Linf (pixel units, 0-255), PSNR (dB, ``None`` if identical) and SSIM per image pair.

    Args:
      originals, outputs: ``uint8 [B, H, W, 3]``.
    """
    from qcamo_jax import metrics  # the one implementation of L2/PSNR/SSIM

    l2 = np.asarray(metrics.l2(originals, outputs), np.float64)
    psnr = np.asarray(metrics.psnr(originals, outputs), np.float64)
    ssim = np.asarray(metrics.ssim(originals, outputs), np.float64)
    linf = np.abs(outputs.astype(np.int16) - originals.astype(np.int16)).reshape(len(originals), -1).max(1)
    return [{"l2": float(l2[i]), "linf": float(linf[i]), "psnr": _finite(float(psnr[i])), "ssim": float(ssim[i])}
            for i in range(len(originals))]


def _finite(x: float) -> float | None:
    return x if np.isfinite(x) else None  # identical images: PSNR = inf, which JSON cannot hold


# ----------------------------------------------------------------------------------------------
# The run.


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


class _Item:
    __slots__ = ("index", "path", "name", "sha", "shape", "seed")

    def __init__(self, index, path, name):
        self.index, self.path, self.name = index, path, name
        self.sha = self.shape = self.seed = None


def plan_batches(items: Sequence[Any], batch_size: int, shape_of=lambda it: it.shape, key_of=lambda it: it.name):
    """Group items by image shape and cut each group into batches.

    Within a group, items are sorted by ``key_of`` (the output name) and every batch has the group's
    batch size ``min(batch_size, len(group))`` (the last one is padded by the caller). Batches depend
    only on the set of items, so a resumed run recomputes a batch exactly as the first run did.

    Returns:
      list of ``(shape, group_batch_size, [items])``.
    """
    groups: dict[tuple, list] = {}
    for it in items:
        groups.setdefault(tuple(shape_of(it)), []).append(it)
    plan = []
    for shape in sorted(groups):
        g = sorted(groups[shape], key=key_of)
        b = max(1, min(int(batch_size), len(g)))
        plan.extend((shape, b, g[i:i + b]) for i in range(0, len(g), b))
    return plan


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
    from qcamo_jax import report as report_mod
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
    group.agree("the inputs and settings", _job_fingerprint(paths, names, shash, batch_size, resume, devices))
    items = [_Item(i, p, n) for i, (p, n) in enumerate(zip(paths, names))]
    records: list[dict[str, Any] | None] = [None] * len(items)
    batches = _BatchRunner(out, settings, shash, engine, Scorer(model), log)
    bar = _progress_bar(len(items), progress and group.is_main)

    # Pass 1: read every input once (shape, hash), each process its part; refuse the bad ones, alike on
    # every process. Pixels are re-read per batch so that memory stays bounded by one batch.
    ok: list[_Item] = []
    probes = group.gather_parts([_probe(it.path, model.min_size) for it in group.part(items)])
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
    reuse = _reuse_flags(plan, previous, shash, out, group)
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
            report_mod.write_reports(out, _finished(records, previous, resume))
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


def _probe(path: Path, min_size: Sequence[int]) -> dict[str, Any]:
    """What pass 1 learns about one input, as JSON-able data (processes exchange it).

    Returns:
      ``{"sha256": hex or None, "shape": [H, W, 3] or None, "error": one-line reason or None}``.
    """
    try:
        img = imageio.load_rgb(path)
        sha = fileio.sha256_file(path)
    except ImageFileError as exc:
        return {"sha256": None, "shape": None, "error": exc.message}
    except OSError as exc:  # raced away between the read and the hash
        return {"sha256": None, "shape": None, "error": f"cannot read ({exc.strerror or exc})"}
    (h, w), (min_h, min_w) = img.shape[:2], (int(s) for s in min_size)
    error = f"{w}x{h} pixels is smaller than the model's minimum {min_w}x{min_h}" if h < min_h or w < min_w else None
    return {"sha256": sha, "shape": list(img.shape), "error": error}


def _job_fingerprint(paths: Sequence[Path], names: Sequence[str], shash: str, batch_size: int, resume: bool,
                     devices: Any) -> str:
    """Hash of everything the processes of a job must agree on for their batch plans to match."""
    blob = json.dumps([[os.fspath(p) for p in paths], list(names), shash, int(batch_size), bool(resume), str(devices)])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _reuse_flags(plan, previous: Mapping[str, dict], shash: str, out: Path, group) -> list[bool]:
    """Per batch of ``plan``: can ``--resume`` reuse the previous results of the whole batch?

    Each process checks the records and output files of its part of every batch; a batch is reused
    only if every process says yes (one gather), so the decision is the same on every process.
    """
    if not previous:  # the same on every process (broadcast from process 0)
        return [False] * len(plan)
    mine = [all(_reusable(previous.get(os.fspath(it.path)), it.sha, shash, out) for it in group.part(batch))
            for _, _, batch in plan]
    return [all(flags) for flags in zip(*group.allgather(mine))] if plan else []


def _engine_batch(images: Sequence[np.ndarray], seeds: Sequence[int], size: int,
                  shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The ``uint8 [size, H, W, 3]`` images and ``int64 [size]`` seeds of one engine call.

    Short parts are padded by repeating their last image (every call of a shape group has the same
    batch size: one compile per shape). A part with no image at all (a process with nothing left in
    a batch of a multi-process run, which must make the call all the same) is mid-grey images with
    seed 0, whose results are dropped.
    """
    from qcamo_jax.sharding import pad_batch

    if not images:
        images, seeds = [np.full(tuple(shape), 128, np.uint8)], [0]
    (x, s), _ = pad_batch((np.stack(images), np.asarray(seeds, np.int64)), 1, size)
    return x, s


class _BatchRunner:
    """Attacks one process's part of a batch and writes its output files and records."""

    def __init__(self, out: Path, settings: Settings, shash: str, engine: Engine, scorer: Scorer,
                 log: Callable[[str], None]):
        self.out, self.settings, self.shash, self.engine, self.scorer, self.log = out, settings, shash, engine, scorer, log

    def refusal(self, it: _Item, reason: str, *, log: bool = True) -> dict[str, Any]:
        """The record of a refused input (``error`` set, no output), logged as one line if ``log``."""
        rec = empty_record(it.path, self.settings)
        rec.update(error=reason, input_sha256=it.sha, settings_hash=self.shash)
        if log:
            self.log(f"qcamo: skipped {it.path}: {reason}")
        return rec

    def attack_part(self, part: Sequence[_Item], shape: Sequence[int], size: int, score_batch: int, *,
                    collective: bool) -> list[dict[str, Any]]:
        """Attack ``part`` (images of ``shape``), write the outputs; one record per item of ``part``.

        Args:
          part: this process's items of the batch; in a multi-process run possibly none.
          shape: ``(H, W, 3)`` of every image of the batch.
          size: engine batch size of this shape group, the same for every call and every process.
          score_batch: chunk size of the scorer: the whole batch's size, so that scores are computed as
            in a single-process run.
          collective: the engine call is collective: make it even when no image of ``part`` is left.
        """
        t0 = time.perf_counter()
        recs: dict[int, dict[str, Any]] = {}
        images, good = [], []
        for it in part:
            try:
                img = imageio.load_rgb(it.path)
                if img.shape != tuple(shape) or fileio.sha256_file(it.path) != it.sha:
                    raise ImageFileError("changed while the run was going on", it.path)
            except (ImageFileError, OSError) as exc:
                recs[it.index] = self.refusal(it, getattr(exc, "message", None) or f"cannot read ({exc})")
                continue
            images.append(img)
            good.append(it)
        if good or collective:
            x, seeds = _engine_batch(images, [it.seed for it in good], size, shape)
            encoded = list(self.engine(x, seeds))[: len(good)]
            if good:
                recs.update(self._results(good, x[: len(good)], encoded, shape, score_batch, t0))
        return [recs[it.index] for it in part]

    def _results(self, good: Sequence[_Item], x: np.ndarray, encoded: Sequence[Encoded], shape: Sequence[int],
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


def _finished(records, previous, resume):
    """Records so far, plus (when resuming) previous complete records not yet revisited."""
    out = [r for r in records if r is not None]
    if resume:
        seen = {r["path"] for r in out}
        out.extend(r for p, r in previous.items() if p not in seen and r.get("error") is None)
    return out


def _jsonable(v):
    if isinstance(v, (np.generic, np.ndarray)):
        v = np.asarray(v)
        return v.item() if v.ndim == 0 else v.tolist()
    if hasattr(v, "shape") and getattr(v, "ndim", 1) == 0:  # jax scalars
        return np.asarray(v).item()
    return v


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


# ----------------------------------------------------------------------------------------------
# The real engine: qcamo_jax.attacks + qcamo_jax.quantize, jitted once per shape.


def attack_config(settings: Settings):
    """``(attacks.api method name, config)`` for ``settings.method`` and ``settings.attack_options``.

    ``pgd`` and ``jpeg-pgd`` are the paper's attack: L2 PGD inside a bisection over the budget
    (:class:`qcamo_jax.attacks.config.SearchConfig`); ``jpeg-pgd`` differentiates through a simulated
    JPEG round trip at ``settings.quality``. Options: ``steps`` (PGD steps per try), ``search_steps``
    (bisection tries), ``eps_max``, ``margin`` (go below ``T - margin``, attack and quantizer), ``eps``
    (FGSM/I-FGSM budget), ``max_steps`` (DCT quantizer: largest change of a coefficient, in steps).
    """
    from qcamo_jax.attacks.config import FGSMConfig, PGDConfig, SearchConfig
    from qcamo_jax.attacks.fgsm import ifgsm_config

    o = dict(settings.attack_options)
    known = {"steps", "search_steps", "eps_max", "margin", "eps", "max_steps"}
    if set(o) - known:
        raise QcamoError(f"unknown attack options {sorted(set(o) - known)}; known: {sorted(known)}")
    margin = float(o.get("margin", DEFAULT_MARGIN))
    if settings.method in ("pgd", "jpeg-pgd"):
        pgd_cfg = PGDConfig(steps=int(o.get("steps", 10)), margin=margin)
        return "search", SearchConfig(pgd=pgd_cfg, eps_max=float(o.get("eps_max", 2000.0)),
                                      bisection_steps=int(o.get("search_steps", 7)))
    if settings.method == "ifgsm":
        return "ifgsm", ifgsm_config(float(o.get("eps", 4.0)), o.get("steps"), margin=margin)
    return "fgsm", FGSMConfig(eps=float(o.get("eps", 4.0)), margin=margin)


class AttackEngine:
    """The real :class:`Engine`: attack (:mod:`qcamo_jax.attacks`) then quantizer (:mod:`qcamo_jax.quantize`).

    One jitted program per image shape maps ``uint8 [B, H, W, 3]`` originals, targets and per-image
    keys to the quantized output (pixels, or JPEG coefficients for ``dct``) plus per-image budget and
    iterations; the host then encodes each output file. With ``devices`` the program runs data-parallel
    over a device mesh (:func:`qcamo_jax.sharding.data_parallel`); each image's result does not depend on
    the others in its batch.
    """

    def __init__(self, model, settings: Settings, *, devices: str | int | None = None):
        import jax
        import jax.numpy as jnp

        from qcamo_jax.attacks import api

        self.model = model
        self.settings = settings
        method, config = attack_config(settings)
        transform = None
        if settings.method == "jpeg-pgd":
            from qcamo_jax.quantize.dct import DCTConfig
            from qcamo_jax.quantize.jpeg_aware import jpeg_transform

            # the differentiable round trip of the reference re-encoder (ImageMagick-like)
            transform = jpeg_transform(DCTConfig.for_imagemagick(settings.quality))
        attack = api.attack_fn(model.score_one, method, config, transform)
        quantizer = _quantizer(model, settings)
        self.identity = f"{method}:{config!r}:{settings.quantize}:{settings.quality}"

        self.traces = 0  # how many times the program was traced (compiled): one per image shape

        def program(variables, originals, targets, keys):
            self.traces += 1
            adv, res = attack(variables, originals.astype(jnp.float32), targets, keys)
            out = quantizer(variables, originals, adv, targets)
            return out, {"budget": res.budget, "iterations": res.iterations}

        self._variables = model.variables
        if devices is None:
            self._program = jax.jit(program)
        else:
            from qcamo_jax import sharding

            mesh = sharding.make_mesh(devices)
            self._variables = sharding.replicate(model.variables, mesh)
            self._program = sharding.data_parallel(program, mesh, in_axes=(None, 0, 0, 0))

    def __call__(self, images: np.ndarray, seeds: np.ndarray) -> list[Encoded]:
        import jax
        import jax.numpy as jnp

        images = np.asarray(images, np.uint8)
        keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds, jnp.uint32))
        targets = np.full((images.shape[0],), self.settings.target, np.float32)
        out, extras = self._program(self._variables, images, targets, keys)
        out = jax.tree.map(np.asarray, out)  # JpegCoefficients keeps its static fields
        extras = {k: np.asarray(v) for k, v in extras.items()}
        files = _encode_outputs(out, images, self.settings)
        return [Encoded(data, {k: v[i] for k, v in extras.items()}) for i, data in enumerate(files)]


def _quantizer(model, settings: Settings):
    """``q(variables, originals uint8 [B,H,W,3], adversarial float [B,H,W,3], targets [B]) -> output pytree``.

    ``none``/``spatial`` give ``uint8 [B, H, W, 3]`` pixels; ``dct`` a batched
    :class:`qcamo_jax.jpeg.codec.JpegCoefficients` made for the reference re-encoder (ImageMagick-like:
    IFAST DCT up to quality 90, ISLOW above; 4:4:4).
    """
    import jax.numpy as jnp

    margin = float(dict(settings.attack_options).get("margin", DEFAULT_MARGIN))
    if settings.quantize == "none":
        return lambda v, o, a, t: jnp.clip(jnp.round(a), 0, 255).astype(jnp.uint8)
    if settings.quantize == "spatial":
        from qcamo_jax.quantize.spatial import SpatialConfig, quantize_spatial

        return lambda v, o, a, t: quantize_spatial(model.score_one, v, o, a, t, SpatialConfig(margin=margin))[0]
    from qcamo_jax.quantize.dct import DCTConfig, quantize_dct

    config = DCTConfig.for_imagemagick(settings.quality, max_steps=int(dict(settings.attack_options).get("max_steps", 1)),
                                       margin=margin)
    return lambda v, o, a, t: quantize_dct(model.score_one, v, o, a, t, config)[0]


def _encode_outputs(out, originals: np.ndarray, settings: Settings) -> list[bytes]:
    """Host side: the output file bytes of each image (PNG pixels, or a JPEG holding exactly the coefficients)."""
    if settings.quantize in ("none", "spatial"):
        return [encode_png(out[i]) for i in range(originals.shape[0])]
    from qcamo_jax.jpeg import io as jio
    from qcamo_jax.quantize.dct import unbatch

    return [jio.jpeg_bytes(unbatch(out, i)) for i in range(originals.shape[0])]


def make_engine(model, settings: Settings, *, devices: str | int | None = None, batch_size: int = 4) -> Engine:
    """Build the attack + quantizer engine for ``settings`` (see :class:`AttackEngine`)."""
    return AttackEngine(model, settings, devices=devices)
