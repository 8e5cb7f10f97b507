"""``qcamo evaluate``: scores as saved and after real encoders, distortion, reports."""

import csv
import io
import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import photos
from qcamo_jax import cli, evaluate, evaluation_report
from qcamo_jax.commands import options
from qcamo_jax.models import hub
from test_quantize_spatial import ToyScore

SIZE = (96, 128)  # the tiny model's input size


@pytest.fixture(scope="module")
def toy():
    """A small CNN as a QualityModel (building the tiny KonCept512 costs a minute of compilation)."""
    import jax

    module = ToyScore()
    variables = module.init(jax.random.PRNGKey(1), jnp.zeros((1, *SIZE, 3)))
    return hub.QualityModel(module, variables, {"name": "toy"}, SIZE, (8, 8))


@pytest.fixture(autouse=True)
def _toy_model(monkeypatch, toy):
    monkeypatch.setattr(options, "MODEL_NAMES", (*options.MODEL_NAMES, "toy"))  # let --model toy parse
    real = hub.load_model
    monkeypatch.setattr(hub, "load_model", lambda spec="default": toy if spec == "toy" else real(spec))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    orig, att = root / "orig", root / "att"
    orig.mkdir()
    att.mkdir()
    imgs = {n: photos.photo(n, SIZE) for n in ("astronaut", "coffee")}
    for n, im in imgs.items():
        Image.fromarray(im).save(orig / f"{n}.png")
    # "attacked" files: one unchanged PNG, one noisy JPEG, and a stray file without an original.
    Image.fromarray(imgs["astronaut"]).save(att / "astronaut.png")
    noisy = np.clip(imgs["coffee"].astype(int) + np.random.default_rng(0).integers(-3, 4, imgs["coffee"].shape), 0, 255)
    Image.fromarray(noisy.astype(np.uint8)).save(att / "coffee.jpg", quality=95)
    Image.fromarray(imgs["coffee"]).save(att / "summary.png")
    return orig, att


def test_cli_table_csv_json(folders, capsys):
    orig, att = folders
    encs = "pillow-444,pillow-420,libjpeg6b-ifast-444,libjpegturbo210-islow-444" + (",imagemagick" if shutil.which("convert") else "")
    rc = cli.main([
        "evaluate", str(att), "--originals", str(orig), "--model", "toy", "--relative-target", "0.5",
        "--encoders", encs,
    ])
    assert rc == 0
    out = capsys.readouterr()
    # summary.png (a report of qcamo attack) is left out silently: never evaluated, never "unmatched"
    assert "P_jpg" in out.out and "summary.png" not in out.err
    assert max(map(len, out.out.splitlines())) <= 100
    data = json.loads((att / "evaluation.json").read_text())
    rows = {r["file"]: r for r in data["files"]}
    assert set(rows) == {"astronaut.png", "coffee.jpg"}
    assert set(rows["coffee.jpg"]["jpg"]) == set(encs.split(","))
    # An unchanged file: same score as its original, zero distortion, infinite PSNR (null in JSON).
    a = rows["astronaut.png"]
    assert a["score_png"] == pytest.approx(a["score_original"], abs=1e-4)
    assert a["l2"] == 0 and a["psnr"] is None and a["ssim"] == pytest.approx(1.0)
    assert a["target"] == pytest.approx(a["score_original"] - 0.5)
    assert data["summary"]["P_png"] == sum(r["score_png"] < r["target"] for r in rows.values()) / 2

    # Independent check of one column: Pillow 4:4:4 q90 of the saved JPEG, scored by the same model.
    model = hub.load_model("toy")
    saved = np.asarray(Image.open(att / "coffee.jpg").convert("RGB"))
    buf = io.BytesIO()
    Image.fromarray(saved).save(buf, "JPEG", quality=90, subsampling=0)
    re = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    ref = float(model.apply(model.variables, jnp.asarray(re[None], jnp.float32))[0])
    assert rows["coffee.jpg"]["jpg"]["pillow-444"] == pytest.approx(ref, abs=1e-3)
    c = rows["coffee.jpg"]
    ref_l2 = np.linalg.norm(saved.astype(float) - photos.photo("coffee", SIZE))
    assert c["l2"] == pytest.approx(ref_l2, rel=1e-5)
    assert c["psnr"] == pytest.approx(20 * np.log10(255 / np.sqrt(np.mean((saved.astype(float) - photos.photo("coffee", SIZE)) ** 2))), rel=1e-4)

    table = list(csv.DictReader((att / "evaluation.csv").open()))
    assert [r["file"] for r in table] == ["astronaut.png", "coffee.jpg"]
    assert float(table[1]["score_jpg_pillow-444"]) == pytest.approx(ref, abs=1e-3)


def test_errors_are_one_line(folders, tmp_path, capsys):
    orig, att = folders
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["evaluate", str(att), "--originals", str(empty), "--model", "toy"]) == 2
    assert "no file has an original" in capsys.readouterr().err
    assert cli.main(["evaluate", str(att), "--originals", str(orig), "--encoders", "nope", "--model", "toy"]) == 2
    assert "unknown encoder" in capsys.readouterr().err
    assert cli.main(["evaluate", str(tmp_path / "missing"), "--originals", str(orig)]) == 2


def test_what_evaluate_would_get_wrong_or_replace_is_refused(folders, tmp_path, capsys):
    """Found by a new user: ``--originals`` equal to DIR compared every file with itself (PSNR inf, a clean-
    looking result), and a DIR/evaluation.json of the user's own was replaced. Both: one line, exit 2,
    nothing written; an earlier evaluation is still replaced."""
    orig, att = folders
    assert cli.main(["evaluate", str(att), "--originals", str(att), "--model", "toy"]) == 2
    assert "compared with itself" in capsys.readouterr().err
    a2 = tmp_path / "att"
    shutil.copytree(att, a2)
    for name in ("evaluation.json", "evaluation.csv"):
        (a2 / name).unlink(missing_ok=True)
    args = ["evaluate", str(a2), "--originals", str(orig), "--model", "toy", "--relative-target", "0.5",
            "--encoders", "pillow-444"]
    (a2 / "evaluation.json").write_text('{"my": "notes"}')
    assert cli.main(args) == 2
    assert "evaluation.json: is not an earlier qcamo evaluation" in capsys.readouterr().err
    assert (a2 / "evaluation.json").read_text() == '{"my": "notes"}'
    (a2 / "evaluation.json").unlink()
    (a2 / "evaluation.csv").write_text("my,table\n")
    assert cli.main(args) == 2 and (a2 / "evaluation.csv").read_text() == "my,table\n"
    capsys.readouterr()
    (a2 / "evaluation.csv").unlink()
    assert cli.main(args) == 0 and cli.main(args) == 0  # the second run replaces the first's reports


def test_a_bad_pair_is_skipped_and_the_others_evaluated(folders, tmp_path, capsys):
    """An attacked file that is not an image, one whose size differs from its original's, one whose
    original is damaged, and one without an original: one skip line each (the format of every
    command), the good file is still evaluated and written, exit 1; none good: exit 2."""
    orig, att = folders
    o2, a2 = tmp_path / "orig", tmp_path / "att"
    shutil.copytree(orig, o2)
    a2.mkdir()
    shutil.copy(att / "astronaut.png", a2 / "astronaut.png")
    (a2 / "coffee.png").write_text("not a picture")
    Image.fromarray(photos.photo("chelsea", (SIZE[0], SIZE[1] + 8))).save(a2 / "chelsea.png")
    Image.fromarray(photos.photo("chelsea", SIZE)).save(o2 / "chelsea.png")
    Image.fromarray(photos.photo("rocket", SIZE)).save(a2 / "rocket.png")
    (o2 / "rocket.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    Image.fromarray(photos.photo("rocket", SIZE)).save(a2 / "stray.png")
    args = ["evaluate", str(a2), "--originals", str(o2), "--model", "toy", "--relative-target", "0.5",
            "--encoders", "pillow-444"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    skips = {line.removeprefix("qcamo: skipped ").split(": ")[0]: line for line in err if line.startswith("qcamo: skipped ")}
    assert set(skips) == {str(a2 / n) for n in ("coffee.png", "chelsea.png", "rocket.png", "stray.png")}, err
    assert "not an image" in skips[str(a2 / "coffee.png")]
    assert "differs from its original's" in skips[str(a2 / "chelsea.png")]
    assert f"its original {o2 / 'rocket.png'}: " in skips[str(a2 / "rocket.png")]
    assert "no original of the same name" in skips[str(a2 / "stray.png")]
    data = json.loads((a2 / "evaluation.json").read_text())
    assert [r["file"] for r in data["files"]] == ["astronaut.png"]

    # A file without an original alone is enough for exit 1: the folder was not all evaluated.
    for name in ("coffee.png", "chelsea.png", "rocket.png"):
        (a2 / name).unlink()
    assert cli.main(args) == 1
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("qcamo: skipped")] == [
        f"qcamo: skipped {a2 / 'stray.png'}: no original of the same name in {o2}"]

    (a2 / "astronaut.png").unlink()
    (a2 / "coffee.png").write_text("not a picture")
    assert cli.main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"qcamo: error: {a2}: no file could be evaluated")


def test_summary_rates():
    rows = [
        evaluate.Row("a", "a", 50.0, 60.0, 40.0, {"x": 55.0}, 1.0, 40.0, 0.99),
        evaluate.Row("b", "b", 50.0, 60.0, 45.0, {"x": 45.0}, 3.0, float("inf"), 1.0),
    ]
    s = evaluation_report.summarize(rows)
    assert s["P_png"] == 1.0 and s["P_jpg"] == {"x": 0.5}
    assert s["mean_l2"] == 2.0 and s["mean_psnr"] == 40.0
    lines = evaluation_report.format_table(rows, s).splitlines()
    assert lines[3].split() == ["all", "(2", "files)", "100%", "50%", "2", "40.00", "0.9950"]  # P_png, both below T
    assert lines[-1].split() == ["x", "50%", "50.00"]  # P_jpg and mean score of encoder x


def test_outputs_renamed_for_same_named_inputs_find_their_originals(tmp_path):
    """``qcamo attack`` renames the outputs of two inputs called ``x`` (``x-<hash>.jpg``); evaluate pairs
    each with its own input through the folder's report.json, and other files by stem as before."""
    orig, out = tmp_path / "originals", tmp_path / "out"
    for sub in ("a", "b"):
        (orig / sub).mkdir(parents=True)
        Image.fromarray(photos.photo("chelsea" if sub == "a" else "coffee", (32, 48))).save(orig / sub / "x.png")
    Image.fromarray(photos.photo("astronaut", (32, 48))).save(orig / "y.png")
    out.mkdir()
    for name in ("x-11111111.jpg", "x-22222222.jpg", "y.jpg", "z.jpg"):
        Image.fromarray(photos.photo("rocket", (32, 48))).save(out / name)
    records = [{"path": str(orig / "a" / "x.png"), "output": str(out / "x-11111111.jpg")},
               {"path": str(orig / "b" / "x.png"), "output": str(out / "x-22222222.jpg")},
               {"path": str(tmp_path / "elsewhere" / "y.png"), "output": str(out / "y.jpg")}]  # not in originals
    (out / "report.json").write_text(json.dumps(records))
    files, originals, unmatched = evaluate.match_originals(evaluate.list_images(out), orig)
    pairs = {f.name: o for f, o in zip(files, originals)}
    assert pairs == {"x-11111111.jpg": orig / "a" / "x.png", "x-22222222.jpg": orig / "b" / "x.png",
                     "y.jpg": orig / "y.png"}
    assert [(p.name, why) for p, why in unmatched] == [("z.jpg", f"no original of the same name in {orig}")]


def test_a_stem_that_several_originals_share_is_not_guessed(tmp_path):
    orig, out = tmp_path / "orig", tmp_path / "out"
    orig.mkdir()
    out.mkdir()
    Image.fromarray(photos.photo("chelsea", (32, 48))).save(orig / "same.png")
    Image.fromarray(photos.photo("coffee", (32, 48))).save(orig / "same.jpg")
    Image.fromarray(photos.photo("astronaut", (32, 48))).save(orig / "other.png")
    for name in ("same.jpg", "other.jpg"):
        Image.fromarray(photos.photo("rocket", (32, 48))).save(out / name)
    files, originals, unmatched = evaluate.match_originals(evaluate.list_images(out), orig)
    assert [(f.name, o.name) for f, o in zip(files, originals)] == [("other.jpg", "other.png")]
    assert [(p.name, why) for p, why in unmatched] == [
        ("same.jpg", f"several originals of its name in {orig} (same.jpg, same.png); rename them apart")]
