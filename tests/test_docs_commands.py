"""The ``qcamo`` command lines written in README.md and docs/ parse with the real parser.

Every ``qcamo <command> ...`` in a fenced code block or an inline code span of the Markdown files is
checked against :func:`qcamo_jax.cli.build_parser`, so the docs cannot name an option, a choice or
a value the command does not take:

* an example (``qcamo attack photos/ --out out/ --target 50``) must parse; only the rules that look at
  the file system (does this input exist?) are relaxed, since the docs name files the reader has;
* a synopsis (``qcamo jpeg IN OUT [--quality 90] [--dct islow|ifast|float]``, recognised by its
  brackets, ``...`` or upper-case placeholders) must name existing options, and each concrete value
  it shows (``islow``, ``90``) must be one the option accepts.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from qcamo_jax import cli
from qcamo_jax.commands import options

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "weights").glob("*.md")])
COMMAND = re.compile(r"(?:^|(?<=[\s/`]))qcamo (attack|score|evaluate|jpeg|convert)(?=\s|$)")
#: Where a command line ends: a comment, another shell command, a redirection, a continuation.
END = re.compile(r"\s#|&&|\s&(\s|$)|;|\s\|\s|\s>|\s\\(\s|$)")


def _snippets(path: Path) -> list[tuple[str, str]]:
    """``(where, text)`` of every ``qcamo <command> ...`` in the file's code blocks and code spans."""
    text = path.read_text(encoding="utf-8")
    name = path.relative_to(ROOT).as_posix()
    found = []
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    for block in blocks:
        lines = block.splitlines()
        for i, line in enumerate(lines):
            starts = [m.start() for m in COMMAND.finditer(line)]
            for j, s in enumerate(starts):
                seg = line[s:starts[j + 1] if j + 1 < len(starts) else len(line)]
                # One command on the line, continued with a backslash: take the next line too.
                if len(starts) == 1 and seg.rstrip().endswith("\\") and i + 1 < len(lines):
                    seg = seg.rstrip()[:-1] + " " + lines[i + 1]
                found.append((f"{name}: {line.strip()[:60]}", seg))
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for span in re.findall(r"`([^`]+)`", prose):  # a code span may wrap onto the next line
        span = " ".join(span.split())
        for m in COMMAND.finditer(span):
            found.append((f"{name}: `{span[:60]}`", span[m.start():]))
    return found


def _cases():
    for path in DOCS:
        for where, seg in _snippets(path):
            cut = END.search(seg)
            yield pytest.param(seg[:cut.start()] if cut else seg, id=where)


def _placeholder(token: str) -> bool:
    return token.isupper() or "..." in token or token in ("*",)


def _parser_without_file_checks() -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for p in sub.choices.values():
        for action in p._actions:
            if isinstance(action.type, options.Rule) and action.type._path:
                action.type = str
    return parser


def test_docs_show_commands():
    cases = list(_cases())
    commands = {c.values[0].split()[1] for c in cases}
    assert commands == {"attack", "score", "evaluate", "jpeg", "convert"}, commands


@pytest.mark.parametrize("line", list(_cases()))
def test_documented_command_parses(line, capsys):
    tokens = shlex.split(line)
    assert tokens[0] == "qcamo"
    command, args = tokens[1], tokens[2:]
    parser = _parser_without_file_checks()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    if any(t.startswith("[") or t.endswith("]") or _placeholder(t) for t in args) or not args:
        flat = [t.strip("[]") for t in args]
        by_option = {s: a for a in sub._actions for s in a.option_strings}
        for i, token in enumerate(flat):
            if not token.startswith("--"):
                continue
            name, _, value = token.partition("=")
            assert name in by_option, f"qcamo {command} has no option {name}"
            action = by_option[name]
            if action.nargs == 0:
                continue
            value = value or (flat[i + 1] if i + 1 < len(flat) else "")
            for alt in value.split("|"):
                if not alt or _placeholder(alt) or alt.startswith("--"):
                    continue
                if action.choices:
                    assert alt in action.choices, f"qcamo {command} {name}: {alt!r} is not a choice"
                elif isinstance(action.type, options.Rule) and not action.type._path:
                    action.type(alt)  # raises if the documented value is refused
        return
    try:
        parser.parse_args(tokens[1:])
    except SystemExit as exc:  # --help prints and exits 0; anything else is a refusal
        if exc.code != 0:
            pytest.fail(f"documented command does not parse: {line}\n{capsys.readouterr().err}")
