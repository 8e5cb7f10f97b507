"""``qcamo score [--model MODEL] [--json] IMAGE...``: one quality score per image.

``IMAGE`` can be files, folders and glob patterns, expanded as for ``qcamo attack``
(:mod:`qcamo_jax.discovery`: every file of a folder that is skipped is named with its reason).

Images are scored at their own size, as the original models do when fed an image (no resizing): the
Keras KonCept512 ends in a global average pool and accepts any size >= 75x75; the MediaEval variant only
accepts sizes whose final map is 8..15 pixels a side (about 299..555 pixels), see docs/models.md. A file
that cannot be read or scored gets one line on stderr, ``qcamo: skipped <file>: <reason>`` (the format of
every command, :func:`qcamo_jax.errors.skip_line`); the other files are still scored and the exit status
is 1. When no file could be scored the exit status is 2, as for ``qcamo attack``
(:mod:`qcamo_jax.exitcodes`). Lines fit 100 columns (a long path is shortened in the middle); ``--json``
gives the exact paths.
"""

from __future__ import annotations

import argparse
import json
import sys

from qcamo_jax.commands import options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", metavar="IMAGE", nargs="+",
                        help="image files, folders (searched recursively) or glob patterns")
    parser.add_argument("--model", default="default", type=options.MODEL,
                        help="converted .safetensors file, 'default' (the embedded model) or 'tiny-random' (tests)")
    parser.add_argument("--json", action="store_true", help='print a JSON list of {"path": ..., "score": ...}')
    parser.add_argument("--batch-size", type=options.BATCH_SIZE, default=4, help="images of the same size scored together (default 4)")


def run(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from qcamo_jax import exitcodes
    from qcamo_jax.discovery import discover_inputs
    from qcamo_jax.display import TABLE_WIDTH, ellipsize, format_size
    from qcamo_jax.errors import ImageFileError, QcamoError, one_line, skip_line
    from qcamo_jax.imageio import load_rgb
    from qcamo_jax.models.hub import load_model

    inputs = [str(p) for p in discover_inputs(args.images)]
    if not inputs:
        raise QcamoError("no input images found in " + " ".join(args.images))
    model = load_model(args.model)
    apply = jax.jit(model.apply)
    failed = 0

    def fail(path: str, message: str) -> None:
        nonlocal failed
        failed += 1
        print(skip_line(path, message), file=sys.stderr)

    images: dict[str, np.ndarray] = {}
    for path in inputs:
        try:
            image = load_rgb(path)
        except ImageFileError as exc:
            fail(path, exc.message)
            continue
        h, w = image.shape[:2]
        mh, mw = model.min_size
        if h < mh or w < mw:
            fail(path, f"{format_size(w, h)} is smaller than the model's minimum {format_size(mw, mh)}")
            continue
        images[path] = image

    scores: dict[str, float] = {}
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for path, image in images.items():
        by_shape.setdefault(image.shape, []).append(path)
    for shape, paths in by_shape.items():
        for i in range(0, len(paths), args.batch_size):
            chunk = paths[i : i + args.batch_size]
            batch = np.stack([images[p] for p in chunk]).astype(np.float32)
            try:
                out = np.asarray(apply(model.variables, batch))
            except ValueError as exc:  # a size the architecture cannot pool (MediaEval variant)
                for p in chunk:
                    fail(p, " ".join(str(exc).split()))
                continue
            scores.update(zip(chunk, (float(s) for s in out)))

    if not scores:
        raise QcamoError(f"no valid input image ({failed} refused)")
    ordered = [(p, scores[p]) for p in inputs if p in scores]
    if args.json:
        print(json.dumps([{"path": p, "score": s} for p, s in ordered], indent=1))
    else:
        for p, s in ordered:  # at most TABLE_WIDTH columns; --json has the exact paths
            print(f"{s:8.3f}  {ellipsize(one_line(p), TABLE_WIDTH - 10)}")
    return exitcodes.INPUT_ERRORS if failed else exitcodes.OK
