"""The rules for command-line values, each written once and shared by every ``qcamo`` command.

Every option that takes a value uses either ``choices=`` or one of the :class:`Rule` objects below as
its argparse ``type=``, so a bad value is refused while parsing, before anything is loaded or created,
as one line naming the option and the problem (``qcamo attack: error: argument --steps: must be an
integer in 1..10000, got '0'``) with exit code 2. :class:`Parser` makes argparse print that single line
instead of its usage block. Each rule carries ``bad_examples``, values it must refuse, which
tests/test_cli_options.py feeds to every option of every command's parser, so a new option is tested
the day it is added.

No heavy import at module level: ``qcamo --help`` stays fast (the encoder registry, which imports JAX,
is read only when an encoder name is checked).
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Any, Callable, Sequence


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line: ``<prog>: error: <problem> (see <prog> --help)``."""

    def error(self, message: str):  # argparse's hook for usage errors; must not return
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see '{self.prog} --help')\n")


class Rule:
    """An argparse ``type=``: text -> value, raising :class:`argparse.ArgumentTypeError` with the problem.

    Args:
      name: what argparse shows for the value in messages, e.g. ``"integer in 1..100"``.
      convert: text -> value; raises ``ValueError`` (with a message saying what is expected) when refused.
      bad_examples: values this rule refuses (for tests; every rule has some).
      path: the value is a path: messages read ``'x': no such file`` rather than ``must be ..., got 'x'``.
    """

    def __init__(self, name: str, convert: Callable[[str], Any], bad_examples: Sequence[str], *, path: bool = False):
        self.__name__ = name
        self._convert = convert
        self.bad_examples = tuple(bad_examples)
        self._path = path

    def __call__(self, text: str) -> Any:
        try:
            return self._convert(text)
        except ValueError as exc:
            problem = " ".join(str(exc).split())
            raise argparse.ArgumentTypeError(f"{text!r}: {problem}" if self._path else f"{problem}, got {text!r}") from None

    def __repr__(self) -> str:
        return f"Rule({self.__name__})"


def integer(lo: int, hi: int) -> Rule:
    """An integer in ``lo..hi`` (decimal text; ``1e3``, ``2.0`` and ``nan`` are refused)."""

    def convert(text: str) -> int:
        try:
            v = int(text.strip(), 10)
        except ValueError:
            raise ValueError(f"must be an integer in {lo}..{hi}") from None
        if not lo <= v <= hi:
            raise ValueError(f"must be in {lo}..{hi}")
        return v

    return Rule(f"integer in {lo}..{hi}", convert, ["abc", "", "2.5", "nan", str(lo - 1), str(hi + 1), "9" * 40])


def number(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Rule:
    """A finite number in the interval from ``lo`` to ``hi`` (open at an end when ``*_open``)."""
    span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def convert(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise ValueError(f"must be a number in {span}") from None
        if not math.isfinite(v):
            raise ValueError(f"must be a finite number in {span}")
        if v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
            raise ValueError(f"must be in {span}")
        return v

    bad = ["abc", "", "nan", "inf", "-inf", "1e400", f"{lo - 5:.17g}", f"{hi + 1:.17g}"]
    bad += [f"{lo:g}"] if lo_open else []
    bad += [f"{hi:g}"] if hi_open else []
    return Rule(f"number in {span}", convert, bad)


#: ``--target``, ``--relative-target``: quality scores are on the models' 0-100 scale (KonIQ's MOS scale).
SCORE = number(0, 100, lo_open=True)
#: ``--margin``: how far below T the attack aims, in score units.
MARGIN = number(0, 100, hi_open=True)
#: ``--quality``: the IJG quality factor of libjpeg (``jpeg_set_quality`` accepts 1..100).
QUALITY = integer(1, 100)
#: ``--steps``: PGD steps per budget try. 10 is the paper's; 10000 tries at 384x512 already take hours.
STEPS = integer(1, 10_000)
#: ``--search-steps``: bisection tries over the L2 budget (at most 2000): after 30 halvings the bracket
#: is 2000 / 2**30 < 2e-6 pixel units wide, so more tries cannot change a file.
SEARCH_STEPS = integer(1, 30)
#: ``--batch-size``: images per model call. ``qcamo evaluate`` pads every call to a full batch, so an
#: absurd value would allocate that many images; 4096 is far above what fits at 384x512 on one device.
BATCH_SIZE = integer(1, 4096)
#: ``--seed``: any non-negative integer (it is hashed with each image's content, so its size is free).
SEED = integer(0, 2**63 - 1)

#: ``--model`` names that are not files (qcamo_jax.models.hub.load_model knows them).
MODEL_NAMES = ("default", "tiny-random")


def _model(text: str) -> str:
    if text in MODEL_NAMES:
        return text
    if not text.strip():
        raise ValueError(f"must be {' or '.join(map(repr, MODEL_NAMES))} or a .safetensors file")
    if text.lower().endswith((".h5", ".pth", ".pt")):
        raise ValueError("convert this file first (qcamo convert SRC DST.safetensors)")
    if os.path.isdir(text):
        raise ValueError("is a folder, not a weight file")
    if not os.path.isfile(text):
        raise ValueError(f"no such weight file (give {' or '.join(map(repr, MODEL_NAMES))} "
                         "or a .safetensors checkpoint)")
    return text


#: ``--model``: a known name or an existing checkpoint file (its contents are checked when loaded).
MODEL = Rule("model", _model, ["", "no-such-model", "missing/model.safetensors", "model.h5", "."], path=True)


def _devices(text: str) -> str | int:
    if text.strip().lower() == "all":
        return "all"
    try:
        n = int(text.strip(), 10)
    except ValueError:
        raise ValueError("must be 'all' or a number of devices >= 1") from None
    if n < 1:
        raise ValueError("must be 'all' or a number of devices >= 1")
    return n  # more than this host has is refused when the devices are listed (qcamo_jax.sharding)


#: ``--devices``: ``all`` or a positive count.
DEVICES = Rule("all or N", _devices, ["", "none", "0", "-2", "1.5", "nan"])


def _encoder_names() -> tuple[str, ...]:
    from qcamo_jax.jpeg.encoders import ENCODERS  # imports JAX: only when a name is checked

    return tuple(ENCODERS)


def _encoder(text: str) -> str:
    names = _encoder_names()
    if text not in names:
        raise ValueError(f"unknown encoder; known: {', '.join(names)}")
    return text


def _encoder_list(text: str) -> tuple[str, ...]:
    chosen = tuple(n.strip() for n in text.split(",") if n.strip())
    if not chosen:
        raise ValueError("must name at least one encoder")
    for n in chosen:
        _encoder(n)
    return chosen


def _survive(text: str) -> str:
    from qcamo_jax.jpeg.reencoders import ReencoderSet

    ReencoderSet.parse(text)  # SpecError is a ValueError with a one-line message
    return text.strip()


#: ``--survive``: a re-encoder set spec (:meth:`qcamo_jax.jpeg.reencoders.ReencoderSet.parse`).
SURVIVE = Rule("re-encoder set", _survive, ["", ",", "nope", "pillow-420", "pillow-420:0", "imagemagick:90-80"])
#: ``--max-l2``: an L2 distortion in pixel units (0-255 scale), > 0.
MAX_L2 = number(0, 1e9, lo_open=True)
#: ``--min-psnr``: a PSNR in dB, > 0.
MIN_PSNR = number(0, 200, lo_open=True)
#: ``--encoders``: comma-separated names of :data:`qcamo_jax.jpeg.encoders.ENCODERS`.
ENCODER_LIST = Rule("encoder list", _encoder_list, ["", ",", "nope", "pillow-444,nope"])


def _output_dir(text: str) -> str:
    if not text.strip():
        raise ValueError("must be a folder path")
    if os.path.exists(text) and not os.path.isdir(text):
        raise ValueError("exists and is not a folder")
    return text  # created, and checked for writing, by qcamo_jax.pipeline.prepare_output_dir


def _output_file(text: str) -> str:
    if not text.strip() or text.endswith(os.sep):
        raise ValueError("must be a file path")
    if os.path.isdir(text):
        raise ValueError("is a folder")
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(parent):
        raise ValueError(f"its folder {parent} does not exist")
    return text


def _input_file(text: str) -> str:
    if not text.strip():
        raise ValueError("must be a file path")
    if os.path.isdir(text):
        raise ValueError("is a folder, not a file")
    if not os.path.isfile(text):
        raise ValueError("no such file")
    return text


#: An output folder: missing (created later) or an existing folder, never an existing file.
OUTPUT_DIR = Rule("folder", _output_dir, ["", "/dev/null"], path=True)
#: An output file (or file stem) whose folder exists: written atomically later.
OUTPUT_FILE = Rule("file", _output_file, ["", "/", "missing-folder/x.out", "/dev/null/x.out"], path=True)
#: An existing input file (its contents are checked when read).
INPUT_FILE = Rule("file", _input_file, ["", "/", "missing-file.png"], path=True)
