"""Does an attacked file stay adversarial? Score it as saved and after real JPEG encoders.

For every attacked file (PNG from the spatial quantizer, JPEG from the DCT quantizer) this measures

* ``P_png``: the model's score of the file exactly as saved (decoded by Pillow);
* ``P_jpg[encoder]``: the score after the file is re-encoded at quality ``Q`` (default 90) by each real
  encoder of :mod:`qcamo_jax.jpeg.encoders` (ImageMagick when installed, Pillow 4:4:4 and 4:2:0,
  libjpeg 6b / 9 / turbo through jpeglib with the islow and ifast DCTs) and decoded again;
* L2 (pixel units), PSNR (dB) and SSIM of the file against its original
  (:mod:`qcamo_jax.metrics`).

For a re-encoder set (:mod:`qcamo_jax.jpeg.reencoders`, the quantizers' ``survive`` option),
:func:`score_survival` re-encodes each file with the REAL library of every member (names
``ENCODER:Q``, as in the quantizers' results) and says whether every score is below the target.

A file succeeds for a column when its score is below its target ``T``. Targets are either fixed
(``--target 50``) or relative to each original's own score (``T_i = score(original_i) - delta``), the
latter for random or tiny models whose scores mean nothing. :mod:`qcamo_jax.evaluation_report` sums the
rows up (the success rate of each column, the paper's P_png / P_jpg, and the mean distortion) and writes
them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np

from qcamo_jax.discovery import RUN_MANIFEST, discover_inputs, resolve_path
from qcamo_jax.errors import QcamoError
from qcamo_jax.display import format_size
from qcamo_jax.imageio import load_rgb
from qcamo_jax.evaluation_report import Row
from qcamo_jax.report import read_records

#: Files that qcamo's own runs leave in a folder, never evaluated (``fnmatch`` patterns): the reports of
#: ``qcamo attack`` (qcamo_jax.pipeline REPORT_JSON, REPORT_CSV, SUMMARY_PNG) and of ``qcamo evaluate``.
OWN_FILES = ("report.json", "report.csv", "summary*.png", "evaluation.csv", "evaluation.json", RUN_MANIFEST)

#: ``name -> reencode(path) -> uint8 [H, W, 3]``: re-encode a file at the evaluation quality, decode it.
ReencodeFn = Callable[[str], np.ndarray]


def check_folders(attacked: str | os.PathLike, originals: str | os.PathLike) -> None:
    """Refuse an ``--originals`` folder that is the attacked folder itself: every file would be measured
    against itself (L2 0, PSNR inf), a clean-looking result that means nothing.

    Raises:
      QcamoError: naming the folder.
    """
    if Path(originals).is_dir() and resolve_path(Path(originals)) == resolve_path(Path(attacked)):
        raise QcamoError("--originals is the folder being evaluated: each file would be compared with itself; "
                         "give the folder of the original images", originals)


def list_images(folder: str | os.PathLike, ignore: Sequence[str] = OWN_FILES, skipped=None) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (:mod:`qcamo_jax.discovery` decides what an
    image file is; ``ignore`` patterns are left out silently, every other file skipped goes to ``skipped``).

    Raises:
      QcamoError: ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise QcamoError("not a folder", folder)
    return sorted(discover_inputs([folder], recursive=False, ignore=ignore, skipped=skipped))


def _inputs_by_output(folder: Path) -> dict[str, Path]:
    """Output file name -> input path, from the ``report.json`` ``qcamo attack`` wrote in ``folder`` (if any)."""
    return {Path(r["output"]).name: Path(r["path"]) for r in read_records(folder) if isinstance(r.get("output"), str)}


def match_originals(files: Sequence[Path], originals_dir: str | os.PathLike
                    ) -> tuple[list[Path], list[Path], list[tuple[Path, str]]]:
    """Pair attacked files with their originals in ``originals_dir``.

    A file that ``qcamo attack`` wrote is paired with the input its folder's ``report.json`` names,
    when that input lies in ``originals_dir`` (this covers the outputs renamed ``<stem>-<hash>`` for
    inputs of the same name); any other file with the original of the same stem. A stem that several
    originals share (``a.png`` and ``a.jpg``) pairs nothing: guessing would measure the wrong pair.

    Returns:
      ``(matched files, their originals, unmatched)``: ``unmatched`` holds ``(file, reason)`` for the
      files left out of the evaluation.
    """
    root = resolve_path(Path(originals_dir))
    by_stem: dict[str, list[Path]] = {}
    for p in list_images(originals_dir):
        by_stem.setdefault(p.stem, []).append(p)
    reports: dict[Path, dict[str, Path]] = {}
    matched, originals, unmatched = [], [], []
    for f in files:
        f = Path(f)
        if f.parent not in reports:
            reports[f.parent] = _inputs_by_output(f.parent)
        src = reports[f.parent].get(f.name)
        if src is not None and src.is_file() and root in resolve_path(src).parents:
            matched.append(f)
            originals.append(src)
        elif len(by_stem.get(f.stem, ())) == 1:
            matched.append(f)
            originals.append(by_stem[f.stem][0])
        elif f.stem in by_stem:
            names = ", ".join(p.name for p in by_stem[f.stem])
            unmatched.append((f, f"several originals of its name in {originals_dir} ({names}); rename them apart"))
        else:
            unmatched.append((f, f"no original of the same name in {originals_dir}"))
    return matched, originals, unmatched


#: Encoders of the evaluation (names of :data:`qcamo_jax.jpeg.encoders.ENCODERS`), ImageMagick first.
DEFAULT_ENCODERS = (
    "imagemagick",
    "pillow-444",
    "pillow-420",
    "libjpeg6b-islow-444",
    "libjpeg6b-ifast-444",
    "libjpeg9f-islow-444",
    "libjpeg9f-ifast-444",
    "libjpegturbo210-islow-444",
    "libjpegturbo210-ifast-444",
)


def reencoders(quality: int = 90, names: Sequence[str] = DEFAULT_ENCODERS) -> dict[str, ReencodeFn]:
    """``name -> reencode(path) -> uint8 [H, W, 3]`` for the encoders installed here.

    Each re-encodes the file at ``quality`` (:func:`qcamo_jax.jpeg.encoders.encode_file`: ImageMagick
    reads the file itself, the others get Pillow's decode of it) and returns Pillow's decode of the
    result. Encoders that are not installed (ImageMagick) are skipped; unknown names raise.
    """
    from qcamo_jax.jpeg import encoders

    out: dict[str, ReencodeFn] = {}
    for name in names:
        if name not in encoders.ENCODERS:
            raise QcamoError(f"unknown encoder {name!r}; known: {', '.join(encoders.ENCODERS)}")
        if not encoders.available(name):
            continue
        out[name] = lambda path, _n=name: encoders.encode_file(_n, path, quality).pixels
    return out


def set_reencoders(survive) -> dict[str, ReencodeFn]:
    """``member name -> reencode(path) -> uint8 [H, W, 3]`` for every member of a re-encoder set.

    The names are :attr:`qcamo_jax.jpeg.reencoders.Reencoder.name` (``"pillow-420:90"``), the same the
    quantizers' ``survive`` option and reports use; each runs the REAL library
    (:func:`qcamo_jax.jpeg.encoders.encode_file`: ImageMagick reads the file itself, the others get
    Pillow's decode of it) at the member's quality and returns Pillow's decode of the result.

    Args:
      survive: :class:`~qcamo_jax.jpeg.reencoders.ReencoderSet` or a spec string (``"common"``).

    Raises:
      QcamoError: a bad spec, or a member whose encoder is not installed here (ImageMagick).
    """
    from qcamo_jax.jpeg import encoders, reencoders

    out: dict[str, ReencodeFn] = {}
    for m in reencoders.resolve(survive):
        if not encoders.available(m.encoder):
            raise QcamoError(f"re-encoder {m.name} is not installed here (ImageMagick's convert is missing)")
        out[m.name] = lambda path, _m=m: encoders.encode_file(_m.encoder, path, _m.quality).pixels
    return out


class Survival(NamedTuple):
    """A file's scores under a re-encoder set, measured with the real libraries.

    Attributes:
      score_saved: the file as saved (Pillow's decode).
      scores: ``member name -> score`` after that real re-encoder (and Pillow's decode).
      worst: the highest of all of them.
      success: every score (as saved and each member) ``< target``.
    """

    score_saved: float
    scores: dict
    worst: float
    success: bool


def score_survival(paths: Sequence[str | os.PathLike], survive, score: Callable[[Sequence[np.ndarray]], np.ndarray],
             targets: float | Sequence[float]) -> list[Survival]:
    """Re-encode each file with every member of ``survive`` (real libraries) and score every version.

    Args:
      paths: output files (PNG or JPEG).
      survive: :class:`~qcamo_jax.jpeg.reencoders.ReencoderSet` or spec string.
      score: batched scorer of ``uint8 [H, W, 3]`` images (:func:`make_scorer`).
      targets: one target for all files or one per file.

    Returns:
      One :class:`Survival` per file (success = every member below its target).
    """
    paths = [os.fspath(p) for p in paths]
    t = np.broadcast_to(np.asarray(targets, np.float64), (len(paths),))
    fns = set_reencoders(survive)
    saved = score([load_rgb(p) for p in paths])
    per = {name: score([fn(p) for p in paths]) for name, fn in fns.items()}
    out = []
    for i in range(len(paths)):
        scores = {name: float(v[i]) for name, v in per.items()}
        worst = max([float(saved[i]), *scores.values()])
        out.append(Survival(float(saved[i]), scores, worst, bool(worst < t[i])))
    return out


def make_scorer(model, batch_size: int = 8) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
    """Batched scoring of a list of ``uint8 [H, W, 3]`` images (grouped by shape, one jit per shape)."""
    import jax
    import jax.numpy as jnp

    apply = jax.jit(model.apply)

    def score(images: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros(len(images), np.float64)
        groups: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(im.shape, []).append(i)
        for idx in groups.values():
            for s in range(0, len(idx), batch_size):
                chunk = idx[s : s + batch_size]
                batch = np.stack([images[i] for i in chunk]).astype(np.float32)
                # Pad the last chunk to a full batch so each shape compiles once.
                pad = batch_size - len(chunk)
                if pad:
                    batch = np.concatenate([batch, np.repeat(batch[-1:], pad, 0)])
                out[chunk] = np.asarray(apply(model.variables, jnp.asarray(batch)))[: len(chunk)]
        return out

    return score


def evaluate_files(
    files: Sequence[Path],
    originals: Sequence[Path],
    score: Callable[[Sequence[np.ndarray]], np.ndarray],
    reencoders: Mapping[str, ReencodeFn],
    target: float | None = 50.0,
    relative: float | None = None,
    skipped: Callable[[Path, str], None] | None = None,
) -> list[Row]:
    """Evaluate attacked files against their originals.

    Args:
      files: attacked files (PNG, JPEG, ...).
      originals: the original of each file (same order).
      score: batched scorer (see :func:`make_scorer`).
      reencoders: ``name -> reencode(path) -> uint8 [H, W, 3]`` (see :mod:`qcamo_jax.jpeg.encoders`).
      target: fixed target score T (ignored when ``relative`` is given).
      relative: if set, ``T_i = score(original_i) - relative``.
      skipped: ``skipped(file, reason)`` for a pair that cannot be evaluated (either file unreadable or
        not an image, sizes that differ, a re-encoder that fails on the file); the others are still
        evaluated. ``None``: such a pair raises instead.

    Returns:
      One :class:`Row` per file evaluated, in the order given.

    Raises:
      QcamoError: a pair that cannot be evaluated, when ``skipped`` is ``None``.
    """
    from qcamo_jax import metrics

    saved, orig, jpgs, kept = [], [], {name: [] for name in reencoders}, []
    for f, o in zip(files, originals):
        try:
            a, b = _load_pair(f, o)
            reencoded = {name: reencode(os.fspath(f)) for name, reencode in reencoders.items()}
        except (QcamoError, OSError, RuntimeError) as exc:  # RuntimeError: ImageMagick failed on the file
            if skipped is None:
                raise
            skipped(Path(f), _pair_failure(exc, f))
            continue
        saved.append(a)
        orig.append(b)
        for name, pixels in reencoded.items():
            jpgs[name].append(pixels)
        kept.append((Path(f), Path(o)))
    if not kept:
        return []
    files, originals = [f for f, _ in kept], [o for _, o in kept]
    s_orig = score(orig)
    s_png = score(saved)
    s_jpg = {name: score(pixels) for name, pixels in jpgs.items()}
    rows = []
    for i, (f, o) in enumerate(zip(files, originals)):
        a, b = saved[i][None], orig[i][None]
        t = float(s_orig[i] - relative) if relative is not None else float(target)
        rows.append(
            Row(
                file=f.name,
                original=o.name,
                target=t,
                score_original=float(s_orig[i]),
                score_png=float(s_png[i]),
                jpg={name: float(v[i]) for name, v in s_jpg.items()},
                l2=float(metrics.l2(a, b)[0]),
                psnr=float(metrics.psnr(a, b)[0]),
                ssim=float(metrics.ssim(a, b)[0]),
            )
        )
    return rows


def _load_pair(file: Path, original: Path) -> tuple[np.ndarray, np.ndarray]:
    """Both images' sRGB pixels; a :class:`QcamoError` naming the attacked file if they differ in size."""
    a, b = load_rgb(file), load_rgb(original)
    if a.shape != b.shape:
        raise QcamoError(f"size {format_size(a.shape[1], a.shape[0])} differs from its original's "
                         f"{format_size(b.shape[1], b.shape[0])}", file)
    return a, b


def _pair_failure(exc: BaseException, file: Path) -> str:
    """The reason a pair cannot be evaluated, naming the original when it is the original's fault."""
    if isinstance(exc, QcamoError):
        reason, where = exc.message, exc.path
    elif isinstance(exc, OSError):
        reason, where = f"cannot read ({exc.strerror or exc})", exc.filename
    else:
        reason, where = " ".join(str(exc).split()), None
    if where is not None and os.fspath(where) != os.fspath(file):
        return f"its original {where}: {reason}"
    return reason
