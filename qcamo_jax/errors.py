"""User-facing errors: one line, naming the file and the problem.

The CLI turns any :class:`QcamoError` into ``qcamo: error: <message>`` and exit code 2, without a
traceback. Library code raises these for problems with user-supplied files; programming errors stay
ordinary exceptions. An input that a command leaves out while the rest goes on (refused when read, or a
file of a folder that is not an image) is named in one line of one format in every command,
:func:`skip_line`: ``qcamo: skipped <file>: <reason>``.
"""

from __future__ import annotations

import os


#: Control characters (C0 and DEL) as escapes, so that a file name holding a newline stays on one line.
_CONTROL = {i: f"\\x{i:02x}" for i in (*range(32), 127)} | {ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r"}


def one_line(path: str | os.PathLike) -> str:
    """``path`` as text on one line: control characters (a newline in a file name) shown as escapes."""
    return os.fspath(path).translate(_CONTROL)


class QcamoError(Exception):
    """A problem with something the user gave us (a file, an option), described in one line."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.message = " ".join(str(message).split())  # always one line
        super().__init__(self.message if self.path is None else f"{one_line(self.path)}: {self.message}")


class WeightFileError(QcamoError):
    """A weight file is missing, corrupt, truncated, unrelated, or of the wrong architecture."""


class ImageFileError(QcamoError):
    """An input image cannot be used (not an image, truncated, too small, a decompression bomb...)."""


class JpegCoefficientError(QcamoError, ValueError):
    """Coefficients or tables that a baseline 8-bit JPEG cannot hold (also a ``ValueError``, as before).

    Raised by :mod:`qcamo_jax.jpeg.io` before anything is written; the message names the component,
    the first offending block and value, and the allowed range.
    """


class ImageFileWarning(UserWarning):
    """An input file was read despite a defect, or a file of a folder was skipped (one line naming the
    file); issued through :mod:`warnings` and printed by the CLI as ``qcamo: warning: <file>: <problem>``
    (:class:`InputSkipped`: as :func:`skip_line`)."""


class InputSkipped(ImageFileWarning):
    """A file or folder found in a folder is not read (not an image file, hidden, unreadable...).

    ``str()`` is ``<path>: <reason>``; the CLI prints it as :func:`skip_line` does.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = os.fspath(path), " ".join(str(reason).split())
        super().__init__(f"{self.path}: {self.reason}")


def skip_line(path: str | os.PathLike, reason: str) -> str:
    """The one line naming an input left out of a run and why: ``qcamo: skipped <path>: <reason>``.

    Used by every command (``attack``, ``score``, ``evaluate``, folder discovery), so a script can grep
    one format.
    """
    return f"qcamo: skipped {one_line(path)}: {' '.join(str(reason).split())}"
