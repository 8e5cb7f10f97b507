"""What counts as an image file, and turning what the user typed into a list of input files.

One definition for every command (``attack``, ``score``, ``evaluate``): a file found in a folder is an
image file when Pillow can decode its format, judged by

1. its extension, if Pillow registers it for a format it opens and decodes
   (``Image.registered_extensions()`` after ``Image.init()``, keeping the formats in ``Image.OPEN``);
   such a file is taken as is, and if it turns out damaged it is refused later with the reason;
2. otherwise its first bytes: the ``accept`` test each Pillow plugin runs in ``Image.open``. This
   finds images with unusual names (``IMG_0001`` without extension, ``.mpo`` stereo photos, which
   Pillow opens through its JPEG plugin, ``.jpg_large``...).

Not image files: formats Pillow only stubs (BUFR, GRIB, HDF5, WMF/EMF: they need a handler Pillow
does not have), MPEG (Pillow reads the size only), EPS when Ghostscript is missing, and anything no
plugin recognises. Hidden entries (a name starting with ``.``), the output folder and, inside a folder
searched, the output folder of an earlier run (:data:`RUN_REPORTS`, :data:`RUN_MANIFEST`) are never read.
Every file or folder of a folder that is skipped is named with its reason through ``skipped`` (by
default an :class:`qcamo_jax.errors.InputSkipped` warning, printed by the CLI as one line).

Files named explicitly, and files a glob pattern matches, are always kept: a typo or a damaged file
is then refused with its reason by :func:`qcamo_jax.imageio.load_rgb`, never dropped silently.

Data contract: paths in, ``list[pathlib.Path]`` out, each file once (by resolved path), in the order
given, a folder's contents sorted by path.
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

from PIL import EpsImagePlugin, Image, ImageFile

from qcamo_jax.errors import InputSkipped
from qcamo_jax.imagefile import HEAD_BYTES, header_format, unsupported_format

#: The reports ``qcamo attack`` writes in its output folder (qcamo_jax.pipeline.outputs REPORT_JSON,
#: REPORT_CSV): a subfolder holding both is an earlier run's output folder, never searched for inputs.
RUN_REPORTS = ("report.json", "report.csv")
#: The list of the files a run may write in its output folder, written before the first of them
#: (qcamo_jax.pipeline.outputs.write_manifest): a subfolder holding it is a run's output folder too.
RUN_MANIFEST = ".qcamo-files"

#: ``skipped(path, reason)``: told about every entry of a folder that is not read.
SkipLog = Callable[[Path, str], None]

#: Formats Pillow registers and opens but cannot decode pixels of (beyond its stubs).
_SIZE_ONLY = {"MPEG": "Pillow reads only the size of MPEG video"}


def _warn_skipped(path: Path, reason: str) -> None:
    warnings.warn(InputSkipped(path, reason), stacklevel=3)


@functools.lru_cache(maxsize=1)
def _formats() -> tuple[dict[str, str], dict[str, str]]:
    """``(extension -> format Pillow decodes, format -> why Pillow cannot decode it)``."""
    Image.init()
    undecodable = dict(_SIZE_ONLY)
    for fmt, (factory, _) in Image.OPEN.items():
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            undecodable[fmt] = f"Pillow has no decoder for {fmt} (a stub that needs an external handler)"
    if not EpsImagePlugin.has_ghostscript():
        undecodable["EPS"] = "EPS needs Ghostscript, which is not installed"
    decodable = {ext: fmt for ext, fmt in Image.registered_extensions().items()
                 if fmt in Image.OPEN and fmt not in undecodable}
    return decodable, undecodable


def image_extensions() -> frozenset[str]:
    """Lower-case extensions (with the dot) of the formats this Pillow opens and decodes."""
    return frozenset(_formats()[0])


def skip_reason(path: str | os.PathLike) -> str | None:
    """Why a file found in a folder is not an image file (None if it is one: see the module docstring)."""
    p = Path(path)
    decodable, undecodable = _formats()
    ext = p.suffix.lower()
    if ext in decodable:
        return None
    registered = Image.registered_extensions().get(ext)
    if registered in undecodable:
        return undecodable[registered]
    try:
        if os.path.getsize(p) == 0:
            return "empty file (0 bytes)"
        fmt = header_format(p)
    except OSError as exc:
        return f"cannot read it to tell whether it is an image ({exc.strerror or exc})"
    if fmt is None:
        try:
            with open(p, "rb") as f:
                known = unsupported_format(f.read(HEAD_BYTES))
        except OSError as exc:
            return f"cannot read it to tell whether it is an image ({exc.strerror or exc})"
        if known is not None:
            return f"not an image file: {known}"
        kind = f"extension {ext}" if ext else "no extension"
        return f"not an image file ({kind}, and no Pillow plugin recognises its first bytes)"
    if fmt in undecodable:
        return undecodable[fmt]
    return None


def _walk(folder: Path, exclude: Path | None, recursive: bool, ignore: Sequence[str], skipped: SkipLog) -> list[Path]:
    found = []

    def unreadable(exc: OSError) -> None:  # os.walk's onerror: a folder it cannot list, named like a file
        skipped(Path(exc.filename) if exc.filename else folder, f"cannot read folder ({exc.strerror or exc})")

    for root, dirs, files in os.walk(folder, onerror=unreadable, followlinks=False):
        rootp = Path(root)
        keep = []
        for d in sorted(dirs):
            full = rootp / d
            if exclude is not None and resolve_path(full) == exclude:
                continue  # the output folder: a second run would attack its own outputs
            if not recursive:
                continue
            if d.startswith("."):
                skipped(full, "hidden folder")
            elif full.is_symlink():
                skipped(full, "symbolic link to a folder: not followed")
            elif all((full / name).is_file() for name in RUN_REPORTS) or (full / RUN_MANIFEST).is_file():
                skipped(full, f"the output folder of an earlier qcamo run (it holds report.json and report.csv, or "
                              f"{RUN_MANIFEST}): not read, so its outputs are not attacked again; name the folder to read it")
            else:
                keep.append(d)
        dirs[:] = keep
        for f in sorted(files):
            full = rootp / f
            if any(fnmatch.fnmatch(f.lower(), pat) for pat in ignore):
                continue
            if f.startswith("."):
                skipped(full, "hidden file")
                continue
            why = skip_reason(full)
            if why is None:
                found.append(full)
            else:
                skipped(full, why)
        if not recursive:
            break
    return found


def resolve_path(p: Path) -> Path:
    """``p.resolve()``, or the absolute path when resolving fails (a loop of links, a vanished folder)."""
    try:
        return p.resolve()
    except OSError:
        return p.absolute()


def discover_inputs(specs: Sequence[str | os.PathLike], exclude: str | os.PathLike | None = None, *,
                    recursive: bool = True, ignore: Sequence[str] = (), skipped: SkipLog | None = None) -> list[Path]:
    """Expand files, folders and glob patterns into a de-duplicated list of input paths.

    * a folder: every image file below it (module docstring), recursively unless ``recursive`` is
      False, skipping hidden entries and ``exclude``; every other entry is passed to ``skipped``;
    * a glob (``*``, ``?``, ``[``; ``**`` recursive): the matching files (folders are expanded as above);
    * anything else is kept as given, even if missing or not an image: it is then refused per file
      with a one-line reason, so a typo never silently drops an input.

    Args:
      specs: what the user typed.
      exclude: a folder never to read from (the output folder).
      recursive: descend into sub-folders of a folder.
      ignore: file-name patterns (``fnmatch``, lower case) left out of folders silently: a command's
        own reports (``report.json``, ``summary*.png``...).
      skipped: ``skipped(path, reason)`` for every entry of a folder that is not taken, and for every
        other name (a symbolic link, another spelling) of a file already taken; default: an
        :class:`~qcamo_jax.errors.InputSkipped` warning per entry.

    Returns:
      Paths in the order given, folders' contents sorted, each file once (by resolved path, under the
      first name met).
    """
    skipped = _warn_skipped if skipped is None else skipped
    exclude_p = resolve_path(Path(exclude)) if exclude is not None else None
    out: list[Path] = []
    seen: dict[Path, Path] = {}

    def add(p: Path):
        key = resolve_path(p)
        if key not in seen:
            seen[key] = p
            out.append(p)
        elif seen[key] != p:  # another name (a link, another spelling) of a file already taken
            skipped(p, f"the same file as {seen[key]}, which is processed once")

    for spec in specs:
        spec_s = os.fspath(spec)
        p = Path(spec_s)
        if p.is_dir():
            for f in _walk(p, exclude_p, recursive, ignore, skipped):
                add(f)
        elif not os.path.lexists(spec_s) and glob.has_magic(spec_s):
            for m in sorted(glob.glob(spec_s, recursive=True)):
                mp = Path(m)
                if mp.is_dir():
                    for f in _walk(mp, exclude_p, recursive, ignore, skipped):
                        add(f)
                elif exclude_p is None or exclude_p not in resolve_path(mp).parents:
                    add(mp)
        else:
            add(p)
    return out
