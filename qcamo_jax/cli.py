"""The ``qcamo`` command line: parse, call library functions, report.

Each subcommand lives in ``qcamo_jax/commands/<name>.py`` and exposes ``add_arguments(parser)`` and
``run(args) -> int``; heavy imports (JAX, the models) happen inside ``run`` so ``qcamo --help`` is fast.
Any :class:`qcamo_jax.errors.QcamoError` that escapes a command is printed as one line
(``qcamo: error: <file>: <problem>``) with exit code 2, never as a traceback. A warning about an input
file (:class:`qcamo_jax.imageio.ImageFileWarning`: a damaged PNG text chunk ignored) is printed as one
line, ``qcamo: warning: <file>: <problem>``; a file of a folder skipped, like an input a command refuses,
as ``qcamo: skipped <file>: <reason>`` (:func:`qcamo_jax.errors.skip_line`). A bad option value is
refused while parsing, as one line naming the option, also with exit code 2
(:mod:`qcamo_jax.commands.options`). Exit codes are defined in :mod:`qcamo_jax.exitcodes`. The commands
that compile keep their compiled programs on disk for the next run (:mod:`qcamo_jax.compile_cache`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from qcamo_jax import __version__, exitcodes
from qcamo_jax.commands import options
from qcamo_jax.errors import QcamoError

#: subcommand -> one-line help. The module qcamo_jax.commands.<name> implements it.
COMMANDS: dict[str, str] = {
    "attack": "attack images so the quality model scores them below a target; write adversarial files and a report",
    "score": "score images with a quality model",
    "convert": "convert KonCept512 weights (Keras .h5 or PyTorch .pth) to a qcamo .safetensors file",
    "jpeg": "encode an image as JPEG with the JAX encoder (islow / ifast / float DCT)",
    "evaluate": "measure success after saving and after real JPEG encoders, and distortion",
}


#: The subcommands that compile JAX programs, and so use the persistent compilation cache.
COMPILING = frozenset({"attack", "score", "jpeg", "evaluate"})


def build_parser() -> argparse.ArgumentParser:
    parser = options.Parser(prog="qcamo", description="Quality camouflage: change photos imperceptibly so that a blind "
                                                       "image quality model scores them below a target, even after "
                                                       "8-bit saving and JPEG re-encoding.")
    parser.add_argument("--version", action="version", version=f"qcamo_jax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = _command_module(name)
        if module is None:
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _command_module(name: str):
    try:
        return importlib.import_module(f"qcamo_jax.commands.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"qcamo_jax.commands.{name}":
            return None  # not built yet
        raise


#: Input-file warnings already printed by this process: a file is read several times in a run (probed,
#: attacked, plotted), and each read warns again.
_warned: set[str] = set()


def _warn_once(text: str, file=None) -> None:
    if text not in _warned:
        _warned.add(text)
        print(text, file=file or sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    """Warnings about an input file as one line (``qcamo: warning: <file>: <problem>``, once per file and
    problem, or :func:`~qcamo_jax.errors.skip_line` for a skipped one); others as usual."""
    from qcamo_jax.errors import ImageFileWarning, InputSkipped, one_line, skip_line

    if issubclass(category, InputSkipped) and isinstance(message, InputSkipped):
        print(skip_line(message.path, message.reason), file=file or sys.stderr)
    elif issubclass(category, ImageFileWarning):
        _warn_once(f"qcamo: warning: {one_line(str(message))}", file)  # a newline can only be a path's
    elif str(message).startswith("Error reading persistent compilation cache entry"):
        # JAX then compiles anew but never rewrites the damaged entry (jax/_src/lru_cache.py: an existing key
        # is kept), so every later run would compile it again: say how to get the cache back.
        from qcamo_jax import compile_cache

        _warn_once(f"qcamo: warning: a damaged entry of the compile cache {compile_cache.active_dir() or ''} was "
                   f"skipped (compiled again instead); delete that folder to rebuild it", file)
    else:
        _default(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _show_warning
    _warned.clear()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a usage error (one line printed, code 2), or --help / --version (0)
        return exc.code if isinstance(exc.code, int) else 2
    if not hasattr(args, "_run"):
        parser.print_help()
        return exitcodes.USAGE
    try:
        if args.command in COMPILING:
            from qcamo_jax import compile_cache

            compile_cache.enable()  # before the first compilation (qcamo_jax/compile_cache.py)
        return int(args._run(args) or 0)
    except QcamoError as exc:
        print(f"qcamo: error: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    except KeyboardInterrupt:
        print("qcamo: interrupted", file=sys.stderr)
        return exitcodes.INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
