"""One definition of "an image file" for every command (issue 13, kind 6), judged against Pillow itself."""

from __future__ import annotations

import io
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import photos
from qcamo_jax import cli, discovery, evaluate, pipeline
from qcamo_jax.errors import InputSkipped
from qcamo_jax.imageio import ImageFileWarning

CASES = Path(__file__).parent / "data" / "cases"


def _save_any(path: Path, fmt: str) -> bool:
    """Write a small picture in ``fmt`` trying the modes a format may demand; False if Pillow cannot."""
    rgb = Image.fromarray(photos.photo("coffee", (32, 32)))
    for im in (rgb, rgb.convert("L"), rgb.convert("1"), rgb.convert("P"), rgb.convert("RGBA")):
        buf = io.BytesIO()
        try:
            im.save(buf, fmt)
        except Exception:  # a format that refuses this mode (or needs an external tool): try the next
            continue
        path.write_bytes(buf.getvalue())
        return True
    return False


def _pillow_decodes(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:  # the reference's verdict, whatever the reason
        return False


@pytest.fixture()
def folder(tmp_path):
    """Every extension Pillow registers and can write, plus non-images, hidden and odd entries."""
    Image.init()
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    written = {}
    for ext, fmt in sorted(Image.registered_extensions().items()):
        if fmt in Image.SAVE:
            p = root / f"x{ext.replace('.', '_')}{ext}"
            if _save_any(p, fmt):
                written[p] = fmt
    jpeg = io.BytesIO()
    Image.fromarray(photos.photo("rocket", (32, 32))).save(jpeg, "JPEG")
    (root / "IMG_0001").write_bytes(jpeg.getvalue())  # no extension: found by its header
    (root / "photo.jpg_large").write_bytes(jpeg.getvalue())  # an unregistered extension
    (root / "sub" / "deep.PNG").write_bytes(_png())
    shutil.copy(CASES / "stereo.mpo", root / "stereo.mpo")
    others = {
        root / "notes.txt": "not an image file",
        root / "data.csv": "not an image file",
        root / "noext": "not an image file",
        root / "empty": "empty file",
        root / ".hidden.png": "hidden file",
        root / ".thumbs": "hidden folder",
        root / "table.h5": "HDF5",
    }
    (root / "notes.txt").write_text("hello\n")
    (root / "data.csv").write_text("a,b\n1,2\n")
    (root / "noext").write_bytes(b"\x00\x01\x02 plain bytes")
    (root / "empty").write_bytes(b"")
    (root / ".hidden.png").write_bytes(_png())
    (root / ".thumbs").mkdir()
    (root / ".thumbs" / "t.png").write_bytes(_png())
    (root / "table.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    return root, written, others


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photos.photo("chelsea", (32, 32))).save(buf, "PNG")
    return buf.getvalue()


def test_every_file_pillow_decodes_is_found_and_every_other_is_named(folder):
    root, written, others = folder
    skipped = []
    got = discovery.discover_inputs([root], skipped=lambda p, why: skipped.append((p, why)))
    # Pillow is the reference: every file it decodes is an input; every other file is skipped with a reason.
    for p, fmt in written.items():
        assert (p in got) == _pillow_decodes(p), (p.name, fmt)
    assert len([p for p in written if p in got]) >= 25  # most of Pillow's writable formats
    for extra in ("IMG_0001", "photo.jpg_large", "stereo.mpo", "sub/deep.PNG"):
        assert root / extra in got, extra
    reasons = dict(skipped)
    for p, why in others.items():
        assert why in reasons.get(p, ""), (p.name, reasons.get(p))
    assert not any(".thumbs" in str(p) for p in got) and root / ".thumbs" / "t.png" not in reasons
    for p in written:  # written but not decodable (e.g. PDF: Pillow writes it, cannot read it) -> named
        if p not in got:
            assert reasons.get(p), p.name
    assert set(got) | set(reasons) == {p for p in root.rglob("*") if ".thumbs/" not in str(p) and p != root / "sub"}


def test_default_log_is_one_warning_per_skipped_file(folder):
    root, _, others = folder
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipeline.discover_inputs([root])  # still importable from pipeline
    msgs = [w.message for w in caught if issubclass(w.category, ImageFileWarning)]
    assert all(isinstance(m, InputSkipped) for m in msgs)
    for p in others:
        assert sum(m.path == str(p) and str(m).startswith(f"{p}: ") for m in msgs) == 1, p
    assert all("\n" not in str(m) for m in msgs)


def test_evaluate_ignores_run_reports_and_uses_the_same_definition(folder, tmp_path):
    root, _, _ = folder
    for name in (pipeline.REPORT_JSON, pipeline.REPORT_CSV, pipeline.SUMMARY_PNG, "summary-2.png",
                 "evaluation.csv", "evaluation.json"):
        (root / name).write_bytes(_png() if name.endswith(".png") else b"{}")
    skipped = []
    listed = evaluate.list_images(root, skipped=lambda p, why: skipped.append(p))
    flat = [p for p in discovery.discover_inputs([root], recursive=False, skipped=lambda *a: None)
            if not p.name.startswith(("report", "summary", "evaluation"))]
    assert listed == sorted(flat)
    assert root / "stereo.mpo" in listed and root / "sub" / "deep.PNG" not in listed
    assert not any(p.name.startswith(("report", "summary", "evaluation")) for p in listed + skipped)


def test_score_accepts_a_folder(tiny_checkpoint, tmp_path, capsys):
    d = tmp_path / "photos"
    d.mkdir()
    for name in ("astronaut", "chelsea"):
        Image.fromarray(photos.photo(name, (96, 128))).save(d / f"{name}.png")
    shutil.copy(CASES / "stereo.mpo", d / "stereo.mpo")
    (d / "notes.txt").write_text("hi")
    assert cli.main(["score", "--model", str(tiny_checkpoint), "--json", str(d)]) == 0
    cap = capsys.readouterr()
    got = [Path(o["path"]).name for o in json.loads(cap.out)]
    assert got == ["astronaut.png", "chelsea.png", "stereo.mpo"]
    assert f"qcamo: skipped {d / 'notes.txt'}: not an image file" in cap.err


def test_a_folder_that_cannot_be_listed_is_named(tmp_path, monkeypatch):
    """An unreadable subfolder (or the folder given) gets its own skip line; the rest is still found.
    The permission error is simulated: tests may run as root, which reads mode-000 folders."""
    (tmp_path / "locked").mkdir()
    Image.fromarray(photos.photo("coffee", (32, 32))).save(tmp_path / "locked" / "in.png")
    Image.fromarray(photos.photo("coffee", (32, 32))).save(tmp_path / "ok.png")
    real = os.scandir

    def scandir(path="."):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    skipped = []
    got = discovery.discover_inputs([tmp_path], skipped=lambda p, why: skipped.append((p, why)))
    assert got == [tmp_path / "ok.png"]
    assert skipped == [(tmp_path / "locked", "cannot read folder (Permission denied)")]
    skipped.clear()
    assert discovery.discover_inputs([tmp_path / "locked"], skipped=lambda p, why: skipped.append((p, why))) == []
    assert skipped == [(tmp_path / "locked", "cannot read folder (Permission denied)")]


@pytest.mark.parametrize("kind", ["svg", "svg_xml", "pdf", "heic", "jxl"])
def test_a_known_unsupported_format_in_a_folder_is_named(kind, tmp_path):
    """A file of a folder that no Pillow plugin opens but whose kind is known (SVG, PDF, HEIC, JPEG XL)
    gets the same name as when it is given directly (imagefile.why_unidentified), not the generic
    "not an image file"; the extension plays no part (the kind is read from the first bytes)."""
    from qcamo_jax.imagefile import why_unidentified

    heads = {
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>',
        "svg_xml": b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
        "pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
        "heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
        "jxl": b"\xff\x0a\xfa\x7f\x01\x90\x08",
    }
    for name in (f"drawing.{kind}", "no_extension"):
        path = tmp_path / name
        path.write_bytes(heads[kind])
        direct = why_unidentified(heads[kind])
        assert direct.startswith("not readable: ")
        assert discovery.skip_reason(path) == "not an image file: " + direct.removeprefix("not readable: ")
        path.unlink()


@pytest.mark.parametrize("depth", [1, 2])
def test_an_earlier_runs_output_folder_inside_an_input_folder_is_named_not_read(tmp_path, depth):
    # A new user ran `attack photos/ --out photos/sub`, then `attack photos/ --out elsewhere`: the
    # second run attacked photos/sub's outputs and its summary.png as new inputs.
    photo = photos.photo("rocket", (16, 16))
    root = tmp_path / "photos"
    run = root / "/".join(["sub"] * depth)
    run.mkdir(parents=True)
    Image.fromarray(photo).save(root / "a.png")
    for name in ("a.png", pipeline.SUMMARY_PNG):
        Image.fromarray(photo).save(run / name)
    (run / pipeline.REPORT_JSON).write_text("[]")
    (run / pipeline.REPORT_CSV).write_text("path\n")
    seen = []
    found = discovery.discover_inputs([root], skipped=lambda p, why: seen.append((p, why)))
    assert found == [root / "a.png"]
    assert [p for p, _ in seen] == [run] and "output folder of an earlier qcamo run" in seen[0][1]
    assert discovery.RUN_REPORTS == (pipeline.REPORT_JSON, pipeline.REPORT_CSV)
    # Named itself, the folder is read (its own report files are not images).
    assert sorted(p.name for p in discovery.discover_inputs([run], skipped=lambda *a: None)) == ["a.png", "summary.png"]
    # A folder holding only one of the two reports is an ordinary folder.
    (run / pipeline.REPORT_CSV).unlink()
    assert len(discovery.discover_inputs([root], skipped=lambda *a: None)) == 3


def test_a_second_name_of_a_file_is_named_not_dropped_silently(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(photos.photo("rocket", (16, 16))).save(d / "a.png")
    (d / "b.png").symlink_to(d / "a.png")
    seen = []
    other = d / ".." / "in" / "a.png"  # another spelling
    found = discovery.discover_inputs([d, other, d / "a.png"], skipped=lambda p, why: seen.append((p, why)))
    assert found == [d / "a.png"]
    assert seen == [(d / "b.png", f"the same file as {d / 'a.png'}, which is processed once"),
                    (other, f"the same file as {d / 'a.png'}, which is processed once")]
