"""The attack pipeline as a library: discovery, naming, odd and bad inputs, reports, resume.

A tiny randomly initialised ``qcamo-small`` keeps this fast on two CPU cores; the real attack (PGD in a
budget search, 2 x 2 steps) and the spatial quantizer run through :class:`qcamo_jax.pipeline.AttackEngine`.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import photos
from bad_inputs.corpus import HANDLED, REFUSED, write_corpus
from qcamo_jax import fileio, imageio, pipeline, report, summary_plot
from qcamo_jax.errors import QcamoError

SHAPE = (64, 96)
# The re-encoder set is not what these tests are about: "none" keeps the compiled program small.
FAST = pipeline.Settings(target=45.0, method="pgd", quantize="spatial", survive="none",
                         attack_options={"steps": 2, "search_steps": 2})
# The corpus run is about file handling: plain rounding keeps its two compiles (two shapes) cheap.
ROUNDED = pipeline.Settings(target=45.0, method="pgd", quantize="none", attack_options={"steps": 2, "search_steps": 2})


@pytest.fixture(scope="module")
def model(tiny):
    return tiny


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, model):
    """One run over the whole bad-input corpus plus a same-name pair; shared by the per-case tests."""
    root = tmp_path_factory.mktemp("corpus")
    base = photos.photo("chelsea", SHAPE)
    files = write_corpus(root / "in", base, model.min_size)
    (root / "in" / "other").mkdir()
    twin = root / "in" / "other" / "rgb_jpeg.jpg"
    shutil.copy(files["rgb_jpeg"], twin)
    hashes = {p: fileio.sha256_file(p) for p in (root / "in").rglob("*")
              if p.is_file() and not p.is_symlink() and os.access(p, os.R_OK)}
    inputs = [root / "in", files["broken_symlink"]]
    logs: list[str] = []
    result = pipeline.run(inputs, root / "out", model, ROUNDED, batch_size=4, progress=False, log=logs.append)
    return dict(root=root, files=files, twin=twin, base=base, hashes=hashes, result=result, logs=logs)


def _record(run, path):
    recs = [r for r in run["result"].records if r["path"] == os.fspath(path)]
    assert len(recs) == 1, [r["path"] for r in run["result"].records]
    return recs[0]


# ---------------------------------------------------------------------------------------------- discovery


def test_discover_inputs_files_folders_globs(tmp_path):
    for rel in ("a/x.png", "a/b/y.JPG", "a/.hidden.png", "a/notes.txt", "c/z.jpeg", "out/old.png"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    got = pipeline.discover_inputs([tmp_path / "a", str(tmp_path / "c" / "*.jpeg"), tmp_path / "a" / "x.png",
                                    tmp_path / "missing.png", str(tmp_path / "**" / "*.png")], exclude=tmp_path / "out")
    rel = [os.path.relpath(p, tmp_path) for p in got]
    # folder: recursive, image extensions only, hidden skipped; duplicates once; missing kept (refused later);
    # the output folder is never read.
    assert rel == ["a/x.png", "a/b/y.JPG", "c/z.jpeg", "missing.png"]


def test_output_names_distinct_and_stable():
    paths = [Path("a/cat.png"), Path("b/cat.jpg"), Path("dog.png"), Path("report.png")]
    names = pipeline.output_names(paths, ".jpg")
    assert len(set(names)) == 4
    assert names[2] == "dog.jpg"
    assert names[0].startswith("cat-") and names[1].startswith("cat-")
    assert names[3] != "report.jpg"  # never collides with the run's own files
    assert pipeline.output_names(paths[::-1], ".jpg") == names[::-1]  # independent of order


def test_image_seed_from_content_and_base_seed():
    assert pipeline.image_seed("ab" * 32, 0) == pipeline.image_seed("ab" * 32, 0)
    assert pipeline.image_seed("ab" * 32, 0) != pipeline.image_seed("ab" * 32, 1)
    assert pipeline.image_seed("ab" * 32, 0) != pipeline.image_seed("cd" * 32, 0)


def test_plan_batches_groups_by_shape_with_fixed_batch_size():
    class It:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    items = [It(f"i{k}", (64, 96, 3) if k % 3 else (80, 80, 3)) for k in range(10)]
    plan = pipeline.plan_batches(items, 4)
    assert [(s, b, len(g)) for s, b, g in plan] == [((64, 96, 3), 4, 4), ((64, 96, 3), 4, 2), ((80, 80, 3), 4, 4)]
    # The plan depends only on the set of items, not their order.
    again = pipeline.plan_batches(items[::-1], 4)
    assert [[i.name for i in g] for *_, g in plan] == [[i.name for i in g] for *_, g in again]


# ---------------------------------------------------------------------------------------------- output folder


def test_output_path_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(QcamoError, match="not a folder"):
        pipeline.prepare_output_dir(f)
    with pytest.raises(QcamoError, match="cannot create"):
        pipeline.prepare_output_dir(f / "sub")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_output_folder_not_writable_is_refused(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        with pytest.raises(QcamoError, match="not writable"):
            pipeline.prepare_output_dir(d)
    finally:
        d.chmod(0o700)


def test_stale_temporary_files_are_removed(tmp_path):
    (tmp_path / ".x.png.abc123.tmp").write_bytes(b"partial")
    (tmp_path / "keep.png").write_bytes(b"x")
    pipeline.prepare_output_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]


def test_processes_preparing_one_folder_at_once_never_fail(tmp_path):
    # The processes of a multi-host run each prepare the shared output folder: one's writability probe
    # must never be swept as another's leftover (it once was, failing a --resume as "not writable").
    import threading

    errors = []

    def prepare():
        for _ in range(300):
            try:
                pipeline.prepare_output_dir(tmp_path)
            except QcamoError as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=prepare) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- odd inputs -> RGB


def test_imageio_conversions(tmp_path):
    base = photos.photo("coffee", SHAPE)
    files = write_corpus(tmp_path, base, (64, 64))
    jpeg_ref = imageio.load_rgb(files["rgb_jpeg"]).astype(int)
    # EXIF orientation honoured: same pixels as the unrotated JPEG, up to JPEG noise.
    rot = imageio.load_rgb(files["exif_rotated_jpeg"]).astype(int)
    assert rot.shape == base.shape and np.mean(np.abs(rot - jpeg_ref)) < 3
    cmyk = imageio.load_rgb(files["cmyk_jpeg"]).astype(int)
    assert np.mean(np.abs(cmyk - base)) < 4
    gray = imageio.load_rgb(files["grayscale_png"])
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    g16 = imageio.load_rgb(files["gray16_png"])
    assert np.array_equal(g16, gray)  # 16-bit v*257 -> v
    rgb16 = imageio.load_rgb(files["rgb16_png"])
    assert np.array_equal(rgb16, base)  # 256 v + (255 - v) -> v (high byte)
    rgba = imageio.load_rgb(files["rgba_png"]).astype(int)
    assert np.all(rgba[:, 0] == 255)  # alpha 0 in the first column -> white
    assert np.max(np.abs(rgba[:, -1] - base[:, -1])) <= 1  # alpha 255 in the last column -> the photo
    gif = imageio.load_rgb(files["palette_transparent_gif"])
    assert np.all(gif[: SHAPE[0] // 4, : SHAPE[1] // 4] == 255)  # transparent palette entry -> white


# ---------------------------------------------------------------------------------------------- the corpus run


@pytest.mark.parametrize("case", HANDLED)
def test_handled_input_is_attacked(corpus_run, case):
    rec = _record(corpus_run, corpus_run["files"][case])
    assert rec["error"] is None
    out = Path(rec["output"])
    assert out.parent == corpus_run["root"] / "out" and out.suffix == ".png"
    pixels = imageio.load_rgb(out)
    assert pixels.shape[:2] == (rec["height"], rec["width"])
    expected = imageio.load_rgb(corpus_run["files"][case])
    assert pixels.shape == expected.shape
    diff = pixels.astype(np.float64) - expected
    assert rec["l2"] == pytest.approx(np.sqrt(np.sum(diff**2)), rel=1e-4, abs=1e-3)
    for key in ("original_score", "final_score", "worst_score", "psnr", "ssim", "seconds"):
        assert isinstance(rec[key], float), key
    assert rec["success_saved"] == (rec["final_score"] < ROUNDED.target)
    after = rec["reencoded_scores"]
    assert set(after) == set(ROUNDED.reencoder_set.names) and rec["survive"] == ROUNDED.survive
    assert rec["worst_score"] == max([rec["final_score"], *after.values()])
    assert rec["success"] == (rec["worst_score"] < ROUNDED.target)


@pytest.mark.parametrize("case", REFUSED)
def test_refused_input_has_one_line_reason(corpus_run, case):
    if case == "no_read_permission" and os.geteuid() == 0:
        pytest.skip("root can read a mode-000 file")
    path = corpus_run["files"][case]
    rec = _record(corpus_run, path)
    assert rec["output"] is None
    assert isinstance(rec["error"], str) and rec["error"] and "\n" not in rec["error"]
    assert any(os.fspath(path) in m and rec["error"] in m for m in corpus_run["logs"]), corpus_run["logs"]
    expected = {
        "zero_byte": "empty", "truncated_jpeg": "truncated", "truncated_png": "truncated", "not_an_image": "not an image",
        "too_small": "smaller than the model", "decompression_bomb": "decompression bomb",
        "broken_symlink": "No such file", "no_read_permission": "Permission denied",
        "bad_critical_crc_png": "bad CRC in the critical chunk IHDR",
    }[case]
    assert expected in rec["error"]


def test_same_name_in_two_folders_gives_two_outputs(corpus_run):
    a = _record(corpus_run, corpus_run["files"]["rgb_jpeg"])
    b = _record(corpus_run, corpus_run["twin"])
    assert a["output"] != b["output"] and Path(a["output"]).is_file() and Path(b["output"]).is_file()
    # Same content -> same per-image seed -> same result, wherever the file sits.
    assert fileio.sha256_file(a["output"]) == fileio.sha256_file(b["output"])


def test_corpus_run_reports_and_exit_code(corpus_run):
    out = corpus_run["root"] / "out"
    result = corpus_run["result"]
    refused = len(REFUSED) - (os.geteuid() == 0)  # root reads the mode-000 file
    assert result.exit_code == 1 and result.failed == refused
    data = json.loads((out / "report.json").read_text())
    assert isinstance(data, list) and len(data) == len(HANDLED) + len(REFUSED) + 1
    required = {"path", "output", "original_score", "final_score", "success_saved", "success", "worst_score", "l2", "psnr",
                "ssim", "seconds", "error"}
    assert all(required <= set(r) for r in data)
    assert data == json.loads(report.to_json(result.records))
    with open(out / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [r["path"] for r in data]
    with Image.open(out / "summary.png") as im:
        assert im.format == "PNG" and im.width > 400
    # Nothing else in the folder: outputs, the two reports, the summary pages, the list of the run's file
    # names (.qcamo-files, which holds them all); no temporary files.
    pages = [summary_plot.page_path(out / "summary.png", k).name for k in range(1, -(-len(data) // summary_plot.PER_PAGE) + 1)]
    names = sorted(p.name for p in out.iterdir())
    written = [Path(r["output"]).name for r in data if r["output"]] + ["report.csv", "report.json", *pages]
    assert names == sorted([*written, ".qcamo-files"])
    assert set(written) <= set(json.loads((out / ".qcamo-files").read_text())["files"])


def test_inputs_never_modified(corpus_run):
    for p, h in corpus_run["hashes"].items():
        assert fileio.sha256_file(p) == h, p


# ---------------------------------------------------------------------------------------------- resume


def _strip(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_resume_reuses_everything_and_recomputes_on_new_settings(tmp_path, model):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("astronaut", "coffee", "rocket"):
        Image.fromarray(photos.photo(name, SHAPE)).save(src / f"{name}.png")
    out = tmp_path / "out"
    engine = pipeline.make_engine(model, FAST)
    first = pipeline.run([src], out, model, FAST, engine=engine, batch_size=2, progress=False, summary=False)
    assert first.failed == 0 and first.processed == 3  # (exit code 0 or 3: the tiny model need not reach T)
    assert engine.traces == 1  # two batches (2 + 1 padded to 2) of one shape: one compile
    again = pipeline.run([src], out, model, FAST, engine=engine, batch_size=2, resume=True, progress=False, summary=False)
    assert again.reused == 3 and again.processed == 0
    assert again.records == first.records
    # A damaged output is recomputed (with its whole batch) and comes back identical.
    victim = Path(first.records[0]["output"])
    good = victim.read_bytes()
    victim.write_bytes(good[:10])
    fixed = pipeline.run([src], out, model, FAST, engine=engine, batch_size=2, resume=True, progress=False, summary=False)
    assert fixed.processed >= 1 and victim.read_bytes() == good
    assert _strip(fixed.records) == _strip(first.records)
    # Different settings: nothing reused.
    other = pipeline.Settings(**{**FAST.as_dict(), "seed": 7})
    changed = pipeline.run([src], out, model, other, engine=engine, batch_size=2, resume=True, progress=False, summary=False)
    assert changed.reused == 0 and changed.processed == 3


# ---------------------------------------------------------------------------------------------- reference JPEG


def test_report_scores_are_the_real_libraries_scores(corpus_run, model):
    """Issue 12: every score after a re-encoder in report.json is what the REAL library gives: re-encode
    each output again here (Pillow, jpeglib, ImageMagick's convert) and score it; success is claimed only
    when all of them, and the file as saved, are below the target."""
    from qcamo_jax import evaluate

    data = json.loads((corpus_run["root"] / "out" / "report.json").read_text())
    done = [r for r in data if r["output"]][:3]
    assert done
    fns = evaluate.set_reencoders(ROUNDED.survive)
    score = evaluate.make_scorer(model, batch_size=1)
    for rec in done:
        again = {name: float(score([fn(rec["output"])])[0]) for name, fn in fns.items()}
        assert again == pytest.approx(rec["reencoded_scores"], abs=1e-3)
        below = all(v < rec["target"] for v in [rec["final_score"], *again.values()])
        assert rec["success"] == below


def test_icc_tagged_input_is_attacked_as_shown_and_output_is_untagged_srgb(corpus_run):
    """Issue 13 kind 4: the input's profile (red and blue primaries exchanged) is applied before the
    attack; the output holds sRGB pixels and no profile, and PSNR compares what a viewer shows."""
    rec = _record(corpus_run, corpus_run["files"]["icc_swapped_png"])
    with Image.open(rec["output"]) as im:
        assert "icc_profile" not in im.info
        out = np.asarray(im.convert("RGB")).astype(float)
    shown = corpus_run["base"][..., ::-1].astype(float)
    assert np.abs(out - shown).mean() * 3 < np.abs(out - corpus_run["base"]).mean()
    assert rec["l2"] == pytest.approx(np.sqrt(np.sum((out - shown) ** 2)), rel=1e-4, abs=1e-3)
