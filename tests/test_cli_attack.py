"""``qcamo attack`` as a user runs it: exit codes, refusals up front, and ``kill -9`` then ``--resume``.

The runs are real subprocesses of the CLI on a tiny randomly initialised ``qcamo-small`` checkpoint
(``--model PATH``), with the default DCT quantizer and a short attack.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import photos
from qcamo_jax import fileio, imageio

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (64, 96)
# The paper's single re-encoder keeps the compiled DCT quantizer small; sets are tested in test_quantize_survive.
FAST = ["--target", "45", "--steps", "2", "--search-steps", "2", "--batch-size", "2", "--quiet", "--survive", "imagemagick"]


def _qcamo(*args, check_rc=None, env=None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "qcamo_jax", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Six photos (three batches of two) and one zero-byte file."""
    d = tmp_path_factory.mktemp("in")
    for i, name in enumerate(("astronaut", "chelsea", "coffee")):
        img = photos.photo(name, SHAPE)
        Image.fromarray(img).save(d / f"{name}.png")
        Image.fromarray(img[:, ::-1]).save(d / f"{name}_flipped.jpg", quality=95)
    (d / "empty.png").write_bytes(b"")
    return d


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: fileio.sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def _comparable(report: list[dict]) -> list[dict]:
    """Records without what legitimately differs between runs: timing and the output folder."""
    return [{**{k: v for k, v in r.items() if k != "seconds"}, "output": r["output"] and Path(r["output"]).name}
            for r in report]


def test_output_path_refused_up_front(tmp_path, inputs):
    f = tmp_path / "a_file"
    f.write_text("x")
    proc = _qcamo("attack", inputs, "--out", f, "--model", "tiny-random", check_rc=2)
    assert proc.stderr.strip().splitlines() == [
        f"qcamo attack: error: argument --out: '{f}': exists and is not a folder (see 'qcamo attack --help')"]
    proc = _qcamo("attack", inputs, "--out", f / "sub", "--model", "tiny-random", check_rc=2)
    assert "cannot create output folder" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_no_inputs_is_an_error(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    # Refused before any model is loaded (this model file is not a checkpoint).
    (tmp_path / "none.safetensors").write_bytes(b"not a checkpoint")
    proc = _qcamo("attack", tmp_path / "empty_dir", "--out", tmp_path / "out", "--model", tmp_path / "none.safetensors",
                  check_rc=2)
    assert proc.stderr.strip().splitlines() == [f"qcamo: error: no input images found in {tmp_path / 'empty_dir'}"]


@pytest.mark.parametrize("how", ["input folder", "same name", "report name"])
def test_a_run_that_would_overwrite_an_input_is_refused(tmp_path, how):
    """--out is where the inputs are: refused with one line, before the model loads; nothing changes."""
    d = tmp_path / "photos"
    d.mkdir()
    img = photos.photo("chelsea", SHAPE)
    Image.fromarray(img).save(d / "a.jpg", quality=95)
    Image.fromarray(img[:, ::-1]).save(d / "b.png")
    Image.fromarray(img[::-1]).save(d / "summary.png")  # a user's photo that happens to be called so
    (tmp_path / "none.safetensors").write_bytes(b"not a checkpoint")  # never loaded
    before = _hashes(d)
    spec = {"input folder": [d], "same name": [d / "a.jpg", d / "b.png"], "report name": [d / "summary.png"]}[how]
    proc = _qcamo("attack", *spec, "--out", d, "--model", tmp_path / "none.safetensors", check_rc=2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(d) in lines[0] and "choose another --out" in lines[0], lines
    assert {"input folder": "input folder", "same name": "a.jpg", "report name": "summary.png"}[how] in lines[0]
    assert _hashes(d) == before  # nothing written, nothing replaced


def test_inputs_beside_their_outputs_are_allowed(tmp_path):
    """The same folder is fine when no file of the run can meet an input (PNGs in, JPEGs out)."""
    from qcamo_jax import pipeline
    from qcamo_jax.errors import QcamoError

    d = tmp_path / "photos"
    d.mkdir()
    paths = [d / "a.png", d / "sub" / "a.png"]
    names = pipeline.output_names(paths, ".jpg")
    pipeline.check_inputs_spared(d, [str(d / "*.png"), str(d / "sub")], paths, names)  # no error
    with pytest.raises(QcamoError, match="would replace"):
        pipeline.check_inputs_spared(d, [str(d / "a.png")], [d / "a.png"], ["a.png"])


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, inputs, tiny_checkpoint):
    """The uninterrupted run every interrupted one is compared with."""
    ref = tmp_path_factory.mktemp("ref")
    proc = _qcamo("attack", inputs, "--model", tiny_checkpoint, *FAST, "--out", ref, check_rc=1)
    return ref, proc


def test_uninterrupted_run(reference_run):
    ref, proc = reference_run
    # Exit code 1 because one input (the empty file) is refused; the rest goes on.
    assert "empty.png: empty file (0 bytes)" in proc.stderr
    report = json.loads((ref / "report.json").read_text())
    assert len(report) == 7 and [r["path"].endswith("empty.png") for r in report if r["error"]] == [True]
    assert all(Path(r["output"]).suffix == ".jpg" for r in report if r["error"] is None)
    for r in report:
        if r["error"] is None:
            assert fileio.sha256_file(r["output"]) == r["output_sha256"]
            assert oct(os.stat(r["output"]).st_mode & 0o777) == oct(0o666 & ~_umask())
    assert (ref / "report.csv").is_file() and (ref / "summary.png").is_file()


def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


# output:1 - killed after the first output file, before any report; output:3 - in the middle of the
# second batch (batch size 2), after the first report checkpoint.
@pytest.mark.parametrize("crash_at", ["output:1", "output:3"])
def test_kill9_then_resume_equals_uninterrupted_run(tmp_path, inputs, tiny_checkpoint, reference_run, crash_at):
    ref, _ = reference_run
    ref_report = json.loads((ref / "report.json").read_text())
    before = _hashes(inputs)
    common = [inputs, "--model", tiny_checkpoint, *FAST]
    out = tmp_path / "killed"
    proc = _qcamo("attack", *common, "--out", out, env={"QCAMO_CRASH_AT": crash_at})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]

    # No partial files under a final name: reports parse and list only complete outputs.
    outputs = [f for f in out.iterdir() if f.suffix == ".jpg" and not f.name.startswith(".")]
    assert 1 <= len(outputs) < 6
    for f in outputs:
        imageio.load_rgb(f)  # decodes completely
    if (out / "report.json").exists():
        for r in json.loads((out / "report.json").read_text()):
            if r["error"] is None:
                assert fileio.sha256_file(r["output"]) == r["output_sha256"]

    # --resume completes it: same outputs, same records, same exit code as the uninterrupted run.
    proc = _qcamo("attack", *common, "--out", out, "--resume", check_rc=1)
    # Stale temporary files cleaned; the list of the run's file names stays.
    assert [f.name for f in out.iterdir() if f.name.startswith(".")] == [".qcamo-files"]
    assert _comparable(json.loads((out / "report.json").read_text())) == _comparable(ref_report)
    for r in ref_report:
        if r["error"] is None:
            assert (out / Path(r["output"]).name).read_bytes() == Path(r["output"]).read_bytes()
    assert (out / "report.csv").read_text().count("\n") == 8 and (out / "summary.png").is_file()

    if crash_at == "output:3":
        # Resuming a finished run recomputes nothing.
        proc = _qcamo("attack", *common, "--out", out, "--resume", check_rc=1)
        assert "(6 reused)" in proc.stderr
        assert _comparable(json.loads((out / "report.json").read_text())) == _comparable(ref_report)

    assert _hashes(inputs) == before  # inputs never modified
