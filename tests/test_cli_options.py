"""Every option of every ``qcamo`` command refuses bad values with one line naming it, exit code 2.

The cases are generated from the real parser (:func:`qcamo_jax.cli.build_parser`): each action that
takes a value is fed the ``bad_examples`` of its :class:`~qcamo_jax.commands.options.Rule`, or a value
outside its ``choices``; an action with neither fails the test, so a new option cannot go unchecked.
Also: sizes are written one way, and the tables fit 100 columns.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qcamo_jax import cli, display, evaluate, evaluation_report
from qcamo_jax.commands import options

ROOT = Path(__file__).resolve().parents[1]

#: Positional inputs validated when the command runs (file discovery refuses them with one line each).
RUNTIME_CHECKED = {("attack", "inputs"), ("score", "images"), ("evaluate", "dir"), ("evaluate", "originals")}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> dict[str, list[str]]:
    """A command line per command that parses (the base each bad value is put into)."""
    d = tmp_path_factory.mktemp("opts")
    png = d / "a.png"
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(png)
    (d / "orig").mkdir()
    return {
        "attack": [str(png), "--out", str(d / "out")],
        "score": [str(png)],
        "evaluate": [str(d), "--originals", str(d / "orig")],
        "jpeg": [str(png), str(d / "x.jpg")],
        "convert": [str(png), str(d / "x.safetensors")],
    }


def _cases():
    for name, parser in _subparsers().items():
        for action in parser._actions:
            if action.nargs == 0 or isinstance(action, argparse._HelpAction):
                continue  # flags
            yield pytest.param(name, action.dest, id=f"{name}-{action.dest}")


def _bad_values(action: argparse.Action) -> list[str]:
    if isinstance(action.type, options.Rule):
        return list(action.type.bad_examples)
    if action.choices:
        return ["no-such-choice", ""]
    return []


@pytest.mark.parametrize("command,dest", list(_cases()))
def test_every_bad_value_is_one_line_exit_2(command, dest, valid, capsys):
    action = next(a for a in _subparsers()[command]._actions if a.dest == dest)
    bad = _bad_values(action)
    if not bad:
        assert (command, dest) in RUNTIME_CHECKED, (
            f"qcamo {command}: {action.option_strings or dest} takes a value but has neither choices nor a "
            "qcamo_jax.commands.options rule as its type")
        return
    name = "/".join(action.option_strings) or action.metavar or dest
    for value in bad:
        argv = [command, *valid[command]]
        if action.option_strings:
            argv.append(f"{action.option_strings[-1]}={value}")
        else:  # a positional: replace its valid value (positionals come first in `valid`)
            index = [a.dest for a in _subparsers()[command]._positionals._group_actions].index(dest)
            argv[1 + index] = value
        with pytest.raises(SystemExit) as exc:
            cli.build_parser().parse_args(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2, (argv, err)
        assert err.count("\n") == 1 and err.endswith("\n"), (argv, err)
        assert f"argument {name}:" in err and "Traceback" not in err, (argv, err)


def test_rules_accept_good_values():
    assert options.STEPS("10") == 10 and options.QUALITY("100") == 100 and options.SCORE("49.5") == 49.5
    assert options.MARGIN("0") == 0.0 and options.SEED(str(2**40)) == 2**40
    assert options.DEVICES("all") == "all" and options.DEVICES("2") == 2
    assert options.MODEL("default") == "default" and options.SURVIVE("imagemagick:90,pillow-420:85-95/5") == "imagemagick:90,pillow-420:85-95/5"
    assert options.ENCODER_LIST("pillow-444, pillow-420") == ("pillow-444", "pillow-420")
    # Every rule's bad examples are refused by the rule itself (the test above relies on it).
    for rule in vars(options).values():
        if isinstance(rule, options.Rule):
            for value in rule.bad_examples:
                with pytest.raises(argparse.ArgumentTypeError):
                    rule(value)


def test_missing_required_and_unknown_option_are_one_line(valid, capsys):
    for argv in (["attack", valid["attack"][0]], ["jpeg"], ["score", valid["score"][0], "--no-such-option"],
                 ["attack", *valid["attack"], "--search", "quick"]):
        with pytest.raises(SystemExit) as exc:
            cli.build_parser().parse_args(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1 and err.startswith("qcamo") and ": error: " in err, err


@pytest.mark.parametrize("argv,expect", [
    (["attack", "examples/", "--out", "{tmp}/o", "--steps", "0"], "argument --steps: must be in 1..10000, got '0'"),
    (["jpeg", "examples/astronaut.jpg", "{tmp}/x.jpg", "--quality", "abc"], "argument --quality: must be an integer"),
])
def test_real_process_prints_one_line_and_creates_nothing(argv, expect, tmp_path):
    """The installed entry point, as a user meets it: exit 2, one stderr line, no output folder."""
    argv = [a.format(tmp=tmp_path) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "qcamo_jax", *argv], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and expect in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "x.jpg").exists()


def test_size_notation_and_ellipsis():
    assert display.format_size(50, 40) == "50 x 40 pixels (W x H)"
    assert display.ellipsize("hubble_deep_field.png", 12) == "hubbl…ld.png"
    assert display.ellipsize("short.png", 12) == "short.png"
    for width in range(1, 30):
        assert len(display.ellipsize("a_rather_long_file_name.png", width)) <= width


def test_evaluate_table_fits_100_columns():
    names = evaluate.DEFAULT_ENCODERS
    rows = [evaluate.Row(file=f"{'very_long_photo_name_' * 5}{i}.jpg", original=f"o{i}.png", target=50.0,
                         score_original=77.123, score_png=49.01, jpg={k: 48.0 + i + j / 10 for j, k in enumerate(names)},
                         l2=1234.5, psnr=float("inf") if i else 38.46, ssim=0.97312) for i in range(3)]
    text = evaluation_report.format_table(rows, evaluation_report.summarize(rows))
    lines = text.splitlines()
    assert max(map(len, lines)) <= display.TABLE_WIDTH, text
    # Every file and every encoder is on its own line; the file names are shortened in the middle.
    assert sum(line.startswith("very_long") and line.split()[0].endswith("0.jpg") for line in lines) == 1
    assert all(any(line.startswith(k + " ") for line in lines) for k in names)
    # Scores after the 9 encoders: file 0 48.0..48.8 and file 1 49.0..49.8 (all below 50), file 2 50.0..50.8.
    assert [line.split()[-4] for line in lines[1:4]] == ["9/9", "9/9", "0/9"]


def test_score_lines_fit_100_columns_and_json_keeps_the_path(tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / ("a_folder_with_a_rather_long_name_" * 3)
    folder.mkdir()
    path = folder / "photo_with_a_long_name.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(path)
    assert len(str(path)) > display.TABLE_WIDTH
    assert cli.main(["score", "--model", str(tiny_checkpoint), str(path)]) == 0
    line = capsys.readouterr().out.rstrip("\n")
    assert len(line) <= display.TABLE_WIDTH and line.endswith("photo_with_a_long_name.png") and "…" in line
    assert cli.main(["score", "--model", str(tiny_checkpoint), "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["path"] == str(path)
