"""What a run tells its user and its scripts: progress from inside the compiled program, exit codes,
and nothing left behind by a run that had nothing to do.

The runs are real: the tiny ``qcamo-small`` (tests/tiny_model.py) attacked through
:class:`qcamo_jax.pipeline.AttackEngine`, and ``qcamo attack`` through :func:`qcamo_jax.cli.main`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import photos
from qcamo_jax import cli, exitcodes, pipeline
from qcamo_jax.record import reached_target

SHAPE = (64, 96)
PGD = pipeline.Settings(target=45.0, method="pgd", quantize="spatial", survive="none",
                        attack_options={"steps": 2, "search_steps": 2})
# The cheapest real attack (one gradient step, plain rounding): for runs that only check exit codes.
CHEAP = ["--method", "fgsm", "--quantize", "none", "--batch-size", "2", "--quiet", "--no-summary"]


@pytest.fixture(scope="module")
def model(tiny):
    return tiny


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    for name in ("astronaut", "coffee", "rocket"):
        Image.fromarray(photos.photo(name, SHAPE)).save(d / f"{name}.png")
    return d


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class _Counting:
    """Counts the units the program reports, and passes them on to the real listener."""

    def __init__(self, inner):
        self.inner, self.units_seen, self.compiles = inner, 0, 0

    def compile_start(self, shape, batch):
        self.compiles += 1
        self.inner.compile_start(shape, batch)

    def compile_end(self, shape, batch):
        self.inner.compile_end(shape, batch)

    @property
    def wants_units(self):
        return self.inner.wants_units

    def units(self, n=1):
        self.units_seen += n
        self.inner.units(n)


def test_progress_moves_inside_a_batch_and_reaches_the_log(tmp_path, model, images):
    engine = pipeline.make_engine(model, PGD)
    seen = {}

    class Engine:
        """The real engine, with the listener the run installs wrapped in a counter."""

        identity = engine.identity

        @property
        def listener(self):
            return engine.listener

        @listener.setter
        def listener(self, value):
            engine.listener = seen.setdefault("counter", _Counting(value)) if value is not None else None

        def expected_units(self, shape, batch):
            seen["expected"] = engine.expected_units(shape, batch)
            return seen["expected"]

        def __call__(self, x, seeds):
            return engine(x, seeds)

    log = tmp_path / "events.jsonl"
    result = pipeline.run([images], tmp_path / "out", model, PGD, engine=Engine(), batch_size=3, progress=False,
                          summary=False, log_json=log)
    events = _events(log)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and events[0]["images"] == 3
    # One compilation (one shape), logged with its duration before the program's first unit.
    assert kinds.count("compile_start") == 1 and kinds.count("compile_end") == 1
    start, end = kinds.index("compile_start"), kinds.index("compile_end")
    assert start < end and events[end]["seconds"] > 0
    assert (events[start]["width"], events[start]["height"], events[start]["batch"]) == (SHAPE[1], SHAPE[0], 3)
    # Units came from the device while the batch ran: progress events inside the batch (fraction < 1),
    # before any image was done, with an ETA.
    first_done = kinds.index("image_done")
    inside = [e for e in events[end:first_done] if e["event"] == "progress"]
    assert len(inside) >= 3 and all(0 < e["batch_fraction"] < 1 for e in inside)
    assert [e["images_done"] for e in inside] == sorted(e["images_done"] for e in inside)
    assert inside[-1]["eta_s"] is not None
    # The program reports one unit per model evaluation of an image: for each of the 3 images, between
    # the attack's minimum (the clean score, one step and one final score per try) and the expected count.
    counter = seen["counter"]
    assert counter.compiles == 1
    assert 3 * (1 + 2 * 2) <= counter.units_seen <= seen["expected"]
    # One image_done per image, with the scores of its record; the end event carries the exit code.
    done = [e for e in events if e["event"] == "image_done"]
    assert sorted(e["path"] for e in done) == sorted(r["path"] for r in result.records)
    for e in done:
        rec = next(r for r in result.records if r["path"] == e["path"])
        assert e["final_score"] == rec["final_score"] and e["reached_target"] == reached_target(rec)
    assert events[-1]["exit_code"] == result.exit_code and events[-1]["missed"] == sum(
        not reached_target(r) for r in result.records)


@pytest.mark.parametrize("seed", range(40))
def test_progress_bar_never_passes_its_total(seed, capsys):
    """Fractional in-batch steps summed up drifted by float round-off: a bar 1e-14 past its total made tqdm
    warn ("clamping frac") and print a negative ETA at the end of a real 21-image run. Random runs of
    refused inputs, batches of 1-4 images with any number of units, records arriving late (the next
    batch already started) or at once: the bar rises, never passes the total and ends exactly on it."""
    import random
    import warnings

    from qcamo_jax.pipeline.progress import Progress

    rnd = random.Random(seed)
    sizes = [rnd.randint(1, 4) for _ in range(rnd.randint(2, 8))]
    refused = rnd.randint(0, 4)
    total = sum(sizes) + refused
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tqdm's clamping warning fails the test
        progress = Progress(total, bar=True, terminal=True)
        positions = [progress._bar.n]
        if refused:
            progress.images([{"path": f"bad{i}", "error": "not an image"} for i in range(refused)], instant=True)
        pending = []
        for size in sizes:
            units = rnd.randint(3, 40)
            progress.batch_start(size, units)
            for _ in range(rnd.randint(1, units + 5)):
                progress.units(1)
                positions.append(progress._bar.n)
            pending.append(size)
            if rnd.random() < 0.5:
                progress.images([{"path": "x"}] * pending.pop(0))
                positions.append(progress._bar.n)
        while pending:
            progress.images([{"path": "x"}] * pending.pop(0))
            positions.append(progress._bar.n)
        progress.close([], 0)
    assert positions == sorted(positions) and max(positions) <= total
    assert positions[-1] == total
    capsys.readouterr()


def test_no_bar_when_stderr_is_not_a_terminal(capsys):
    """On a log file or a pipe the bar's carriage-return redraws would fill the log: no bar then, and one
    plain line each time a batch's images finish (refusals and reuse print none); on a terminal the
    bar and no such lines. --quiet (bar=False) prints neither."""
    from qcamo_jax.pipeline.progress import Progress

    def run(**kw):
        progress = Progress(5, **kw)
        progress.images([{"path": "bad", "error": "not an image"}], instant=True)
        for size in (2, 2):
            progress.batch_start(size, 10)
            for _ in range(10):
                progress.units(1)
            progress.images([{"path": "x"}] * size)
        progress.close([], 0)
        return capsys.readouterr().err

    log = run(bar=True, terminal=False)
    assert "\r" not in log and "img [" not in log
    lines = log.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("qcamo: 3/5 images done, about ") and lines[0].endswith(" left")
    assert lines[1] == "qcamo: 5/5 images done"
    shown = run(bar=True, terminal=True)
    assert "img [" in shown and "images done" not in shown
    assert run(bar=False, terminal=False) == ""


def test_reached_target_needs_every_check():
    rec = {"error": None, "success": True}
    assert reached_target(rec)
    assert not reached_target({**rec, "success": False}) and not reached_target({**rec, "success": None})
    assert not reached_target({**rec, "error": "cannot read"})


def test_missed_table_fits_100_columns():
    recs = [{"path": "x", "output": "/o/" + "a_very_long_name_" * 8 + ".jpg", "original_score": 77.123,
             "final_score": 49.5, "worst_score": 50.25, "success_saved": True, "success": False, "target": 50.0,
             "reencoded_scores": {"pillow-420:90": 50.25, "imagemagick:90": 49.0}},
            {"path": "y", "output": "/o/short.png", "original_score": 60.0, "final_score": 55.0, "worst_score": None,
             "success_saved": False, "success": None, "target": 50.0, "within_limit": False}]
    lines = pipeline.missed_table(recs, target=50.0)
    assert lines[0] == "qcamo: 2 image(s) not below T=50:"
    assert all(len(line) <= 100 for line in lines)
    assert lines[2].rstrip().endswith("pillow-420:90") and "..." in lines[2] and "50.25" in lines[2]
    assert lines[3].rstrip().endswith("saved,limit") and "short.png" in lines[3]


def test_exit_codes_of_real_runs(tmp_path, images, tiny_checkpoint, capsys):
    common = [str(images), "--model", str(tiny_checkpoint), *CHEAP]
    # The tiny model scores these photos 66-75. Every image below T (the top of the scale): 0.
    assert cli.main(["attack", *common, "--target", "100", "--out", str(tmp_path / "ok")]) == exitcodes.OK
    # Every image processed, none below T (one FGSM step cannot take 66 points off): 3, and the report says so.
    log = tmp_path / "missed.jsonl"
    code = cli.main(["attack", *common, "--target", "1", "--out", str(tmp_path / "missed"), "--log-json", str(log)])
    assert code == exitcodes.MISSED_TARGET
    report = json.loads((tmp_path / "missed" / "report.json").read_text())
    assert len(report) == 3 and not any(r["success_saved"] for r in report)
    assert _events(log)[-1] == {**_events(log)[-1], "event": "end", "exit_code": 3, "missed": 3}
    # A refused input among good ones: 1 (it beats 3).
    (tmp_path / "bad.png").write_bytes(b"not a png")
    code = cli.main(["attack", str(tmp_path / "bad.png"), *common, "--target", "1", "--out", str(tmp_path / "mixed")])
    assert code == exitcodes.INPUT_ERRORS
    # No valid input at all: 2, one line per refused file and one error line, and nothing created.
    capsys.readouterr()
    code = cli.main(["attack", str(tmp_path / "bad.png"), str(tmp_path / "missing.jpg"), "--model", str(tiny_checkpoint),
                     *CHEAP, "--out", str(tmp_path / "nothing")])
    assert code == exitcodes.USAGE
    assert not (tmp_path / "nothing").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and err[-1] == "qcamo: error: no valid input image (2 refused); nothing was written"
    assert all(line.startswith("qcamo: skipped ") for line in err[:2])


def test_help_lists_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["attack", "--help"])
    out = capsys.readouterr().out
    for code, meaning in exitcodes.MEANINGS:
        assert f"  {code:<4d}{meaning}" in out


@pytest.mark.parametrize("where", ["an input", "the output folder", "the run's report", "a file that is no log"])
def test_a_log_json_that_would_damage_a_file_is_refused_and_nothing_is_written(tmp_path, images, tiny_checkpoint,
                                                                               capsys, where):
    out = tmp_path / "out"
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    log = {"an input": images / "coffee.png", "the output folder": out, "the run's report": out / "report.json",
           "a file that is no log": notes}[where]
    if where == "the run's report":
        out.mkdir()  # a run into an existing output folder
    before = {p: p.read_bytes() for p in [*images.iterdir(), notes]}
    capsys.readouterr()
    code = cli.main(["attack", str(images), "--model", str(tiny_checkpoint), *CHEAP, "--out", str(out),
                     "--log-json", str(log)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == exitcodes.USAGE
    assert len(err) == 1 and err[0].startswith(f"qcamo: error: {log}: --log-json "), err
    assert list(out.iterdir()) == [] if where == "the run's report" else not out.exists()
    assert {p: p.read_bytes() for p in [*images.iterdir(), notes]} == before


def test_a_log_json_of_an_earlier_run_is_appended_to(tmp_path, images, tiny_checkpoint):
    log = tmp_path / "events.jsonl"
    for run in ("a", "b"):
        cli.main(["attack", str(images), "--model", str(tiny_checkpoint), *CHEAP, "--target", "100",
                  "--out", str(tmp_path / run), "--log-json", str(log)])
    assert [e["event"] for e in _events(log)].count("start") == 2
