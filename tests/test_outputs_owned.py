"""A run never replaces a file of the user's own in its output folder (only an earlier run's files).

Found by a new user: ``qcamo attack photo.png --out FOLDER`` where ``FOLDER/photo.jpg`` was a different
picture replaced it without a word. The rule (qcamo_jax/pipeline/outputs.py): a file the run would
write may replace only a file an earlier run wrote or was about to write (``.qcamo-files``, written
before the first output, or an older folder's valid ``report.json``). Checked with a stand-in engine
(each input written back as a PNG), so the rule, not the attack, is what runs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import photos
from qcamo_jax import fileio, pipeline
from qcamo_jax.discovery import RUN_MANIFEST
from qcamo_jax.errors import QcamoError
from qcamo_jax.pipeline.engine import Encoded
from qcamo_jax.pipeline.outputs import encode_png, write_manifest

SHAPE = (64, 96)
SETTINGS = pipeline.Settings(target=45.0, method="pgd", quantize="none", survive="none")


class _Echo:
    identity, listener = "echo-engine", None

    def expected_units(self, shape, batch):
        return batch

    def __call__(self, images, seeds):
        return [Encoded(encode_png(np.asarray(im, np.uint8)), {}) for im in images]


def _hashes(folder):
    return {p.name: fileio.sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def _run(inputs, out, tiny):
    return pipeline.run(inputs, out, tiny, SETTINGS, engine=_Echo(), batch_size=2, progress=False, summary=False)


@pytest.fixture
def photo(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(photos.photo("chelsea", SHAPE)).save(d / "cat.png")
    return d / "cat.png"


@pytest.mark.parametrize("name", ["cat.png", "report.json", "report.csv"])
def test_a_users_file_with_a_run_files_name_is_refused_untouched(tmp_path, tiny, photo, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(b"the user's own file")
    before = _hashes(out)
    with pytest.raises(QcamoError, match=rf"would replace {name}, a file no earlier qcamo run wrote"):
        _run([photo], out, tiny)
    assert _hashes(out) == before  # nothing replaced, nothing added (not even .qcamo-files)
    # The command line refuses it the same way, before the model is loaded.
    names = pipeline.output_names([photo], SETTINGS.extension)
    with pytest.raises(QcamoError, match=name):
        pipeline.check_existing_files_are_runs(out, names, 1)


def test_a_run_replaces_the_files_of_an_earlier_run(tmp_path, tiny, photo):
    out = tmp_path / "out"
    _run([photo], out, tiny)
    manifest = json.loads((out / RUN_MANIFEST).read_text())["files"]
    assert {"cat.png", "report.json", "report.csv"} <= set(manifest)  # no summary.png: summary=False
    (out / "cat.png").write_bytes(b"edited since")  # still the earlier run's file: replaced
    _run([photo], out, tiny)
    assert (out / "cat.png").read_bytes() != b"edited since"


def test_files_of_a_run_killed_before_its_report_are_replaced(tmp_path, tiny, photo):
    out = tmp_path / "out"
    out.mkdir()
    write_manifest(out, ["cat.png"], 1)  # what a run writes before its first output
    (out / "cat.png").write_bytes(b"half a run")
    _run([photo], out, tiny)
    assert (out / "report.json").is_file()


def test_a_folder_filled_before_the_manifest_existed(tmp_path, tiny, photo):
    """An older run's folder has no .qcamo-files: its valid report.json says which files are a run's."""
    out = tmp_path / "out"
    _run([photo], out, tiny)
    (out / RUN_MANIFEST).unlink()
    _run([photo], out, tiny)  # its report lists cat.png: replaced
    (out / RUN_MANIFEST).unlink()
    (out / "report.json").write_text("not a qcamo report")
    with pytest.raises(QcamoError, match=r"would replace .*cat\.png"):
        _run([photo], out, tiny)


def test_an_earlier_output_folder_inside_an_input_folder_is_not_read(tmp_path, tiny, photo):
    """A run killed before its reports leaves .qcamo-files: enough to know the folder is a run's."""
    run_dir = photo.parent / "out"
    run_dir.mkdir()
    write_manifest(run_dir, ["cat.png"], 1)
    Image.fromarray(photos.photo("coffee", SHAPE)).save(run_dir / "cat.png")
    with pytest.warns(Warning, match="output folder of an earlier qcamo run"):
        found = pipeline.discover_inputs([photo.parent])
    assert found == [photo]


def test_a_report_json_of_another_program_is_not_a_runs(tmp_path, tiny, photo):
    """A photo catalogue's report.json (a list of objects with a "path") is not a qcamo report: the files
    beside it are the user's, and nothing is replaced or listed as a run's."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text(json.dumps([{"path": "holiday/IMG_1.jpg", "label": "beach", "rating": 5}]))
    (out / "summary.png").write_bytes(b"the user's chart")
    before = _hashes(out)
    with pytest.raises(QcamoError, match="would replace report.json"):
        _run([photo], out, tiny)
    assert _hashes(out) == before


def test_a_manifest_that_is_not_a_file_is_one_line_before_any_work(tmp_path, tiny, photo):
    out = tmp_path / "out"
    (out / RUN_MANIFEST).mkdir(parents=True)
    with pytest.raises(QcamoError, match=r"\.qcamo-files there is not a file"):
        pipeline.check_existing_files_are_runs(out, ["cat.png"], 1)


def test_the_event_log_cannot_be_the_manifest(tmp_path, photo):
    from qcamo_jax.pipeline.outputs import check_log_spared

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(QcamoError, match="another name"):
        check_log_spared(out / RUN_MANIFEST, out, [photo], ["cat.png"])


def test_every_file_at_risk_is_named_at_once_and_no_summary_spares_summary_png(tmp_path, tiny, photo):
    """One refusal names all the files at risk (four files were four runs to find); a run without summary
    pages (--no-summary) leaves a user's summary.png alone instead of refusing it."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("cat.png", "report.csv", "summary.png"):
        (out / name).write_bytes(b"the user's own file")
    names = pipeline.output_names([photo], SETTINGS.extension)
    with pytest.raises(QcamoError, match=r"would replace 3 files .*\(cat\.png, report\.csv, summary\.png\); move them"):
        pipeline.check_existing_files_are_runs(out, names, 1)
    (out / "cat.png").unlink()
    (out / "report.csv").unlink()
    before = _hashes(out)
    _run([photo], out, tiny)  # summary=False
    assert (out / "summary.png").read_bytes() == b"the user's own file"
    assert "summary.png" not in json.loads((out / RUN_MANIFEST).read_text())["files"]
    with pytest.raises(QcamoError, match="would replace summary.png"):
        pipeline.check_existing_files_are_runs(out, names, 1, summary=True)
    assert {k: v for k, v in _hashes(out).items() if k == "summary.png"} == before
