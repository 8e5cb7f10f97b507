"""``qcamo score`` and ``qcamo convert`` from the command line (tiny random KonCept512, real photos)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from PIL import Image

import photos as P
from qcamo_jax import cli
from qcamo_jax.models import checkpoint, hub


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    model = hub.init_random("koncept512", {"variant": "keras", "size": "tiny"}, seed=1)
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    checkpoint.save(path, model.variables, dict(model.metadata))
    return path, model


@pytest.fixture()
def images(tmp_path):
    paths = {}
    for name in ("astronaut", "chelsea", "coffee"):
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(P.photo(name, (96, 128))).save(paths[name])
    paths["other_size"] = tmp_path / "rocket.png"
    Image.fromarray(P.photo("rocket", (120, 100))).save(paths["other_size"])
    paths["not_image"] = tmp_path / "notes.png"
    paths["not_image"].write_text("not a picture")
    paths["too_small"] = tmp_path / "small.png"
    Image.fromarray(P.photo("chelsea", (40, 60))).save(paths["too_small"])
    return paths


def test_score_json_matches_library(tiny_file, images, capsys):
    path, model = tiny_file
    files = [str(images[k]) for k in ("astronaut", "chelsea", "coffee", "other_size")]
    assert cli.main(["score", "--model", str(path), "--json", *files]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["path"] for o in out] == files
    same = np.stack([P.photo(n, (96, 128)) for n in ("astronaut", "chelsea", "coffee")]).astype(np.float32)
    want = np.asarray(jax.jit(model.apply)(model.variables, same))
    np.testing.assert_allclose([o["score"] for o in out[:3]], want, rtol=1e-5, atol=1e-5)
    # another size is scored at its own size (fully convolutional, global pooling), not resized
    other = np.asarray(model.apply(model.variables, P.photo("rocket", (120, 100))[None].astype(np.float32)))
    np.testing.assert_allclose(out[3]["score"], other[0], rtol=1e-5, atol=1e-5)


def test_score_bad_files_are_reported_and_others_scored(tiny_file, images, capsys):
    path, _ = tiny_file
    files = [str(images["not_image"]), str(images["astronaut"]), str(images["too_small"]), str(images["chelsea"])]
    assert cli.main(["score", "--model", str(path), *files]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 2 and "Traceback" not in captured.err
    assert err[0].startswith(f"qcamo: skipped {images['not_image']}: not an image")
    assert err[1].startswith(f"qcamo: skipped {images['too_small']}: 60 x 40 pixels (W x H) is smaller than the model's "
                             "minimum 75 x 75 pixels (W x H)")
    lines = captured.out.strip().splitlines()
    assert len(lines) == 2 and lines[0].endswith(str(images["astronaut"]))
    float(lines[0].split()[0])


def test_score_with_no_valid_input_exits_2_as_attack_does(tiny_file, images, capsys):
    """Nothing scored is "nothing run" (exit 2, qcamo_jax.exitcodes), the code ``qcamo attack`` gives; each
    refused file still gets its own skip line first."""
    path, _ = tiny_file
    files = [str(images["not_image"]), str(images["too_small"])]
    assert cli.main(["score", "--model", str(path), *files]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert [line.split(":")[0] for line in err] == ["qcamo", "qcamo", "qcamo"]
    assert err[0].startswith(f"qcamo: skipped {files[0]}: ") and err[1].startswith(f"qcamo: skipped {files[1]}: ")
    assert err[2] == "qcamo: error: no valid input image (2 refused)" and captured.out == ""


def test_score_tiny_random_and_missing_model(images, capsys, tmp_path):
    assert cli.main(["score", "--model", "tiny-random", "--json", str(images["coffee"])]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    assert cli.main(["score", "--model", str(tmp_path / "nope.safetensors"), str(images["coffee"])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.safetensors': no such weight file" in err
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"x")
    assert cli.main(["score", "--model", str(h5), str(images["coffee"])]) == 2
    assert "convert this file first" in capsys.readouterr().err


def test_a_newline_in_a_file_name_keeps_every_report_line_one_line(tiny_file, images, capsys):
    """A name holding a newline (or another control character) is shown with escapes, so "one line per
    problem" holds for scripts reading the log; the JSON output keeps the true name."""
    path, _ = tiny_file
    folder = images["coffee"].parent
    good = folder / "new\nline.png"
    good.write_bytes(images["coffee"].read_bytes())
    bad = folder / "bad\tname.png"
    bad.write_text("not a picture")
    assert cli.main(["score", "--model", str(path), str(good), str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"qcamo: skipped {folder}/bad\\tname.png: ")
    assert captured.out.count("\n") == 1 and "new\\nline.png" in captured.out
    assert cli.main(["score", "--model", str(path), "--json", str(good)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["path"] == str(good)


def test_a_warning_about_a_file_with_a_newline_in_its_name_is_one_line(capsys):
    from qcamo_jax.errors import ImageFileWarning

    cli._show_warning(ImageFileWarning("in/new\nline.png: ignored PNG chunk(s) with a bad CRC: tEXt"), ImageFileWarning,
                      "x.py", 1)
    assert capsys.readouterr().err == "qcamo: warning: in/new\\nline.png: ignored PNG chunk(s) with a bad CRC: tEXt\n"


def test_a_warning_about_a_file_is_printed_once_per_run(capsys):
    """A run reads a file several times (probe, attack, summary plot): each read warned, and a new user
    saw the same bad-CRC line three times. Once per file and problem; a new run warns again."""
    from qcamo_jax.errors import ImageFileWarning

    cli._warned.clear()
    for path in ("a.png", "a.png", "b.png", "a.png"):
        cli._show_warning(ImageFileWarning(f"{path}: ignored PNG chunk(s) with a bad CRC: tEXt"), ImageFileWarning,
                          "x.py", 1)
    assert capsys.readouterr().err.splitlines() == [
        "qcamo: warning: a.png: ignored PNG chunk(s) with a bad CRC: tEXt",
        "qcamo: warning: b.png: ignored PNG chunk(s) with a bad CRC: tEXt"]
    cli.main(["--version"])  # a new run starts with nothing warned
    capsys.readouterr()
    cli._show_warning(ImageFileWarning("a.png: x"), ImageFileWarning, "x.py", 1)
    assert capsys.readouterr().err == "qcamo: warning: a.png: x\n"


def test_a_damaged_compile_cache_entry_is_one_line_saying_how_to_rebuild(capsys):
    """JAX compiles again past a damaged cache entry but never rewrites it, and warned with a raw Python
    warning each run; one qcamo line per run instead, naming the folder to delete."""
    cli._warned.clear()
    for _ in range(2):
        cli._show_warning(UserWarning("Error reading persistent compilation cache entry for 'jit_program': "
                                      "ZstdError: could not decompress"), UserWarning, "compiler.py", 782)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("qcamo: warning: a damaged entry of the compile cache")
    assert err[0].endswith("delete that folder to rebuild it")
