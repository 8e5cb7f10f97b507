"""``qcamo evaluate DIR --originals DIR``: success as saved and after real JPEG encoders, and distortion.

Thin: parse, call :mod:`qcamo_jax.evaluate`, print the table, write CSV and JSON (atomically).
A file without an original of the same name (or with several: ``a.png`` and ``a.jpg``; the pair is
not guessed), or a pair that cannot be evaluated (unreadable, not an
image, sizes that differ), is named in one line (:func:`qcamo_jax.errors.skip_line`) and the others are
still evaluated; exit status 1 if a file was left out either way, 2 if none could be evaluated
(:mod:`qcamo_jax.exitcodes`).
"""

from __future__ import annotations

import argparse
import sys

from qcamo_jax.commands import options


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="folder of attacked files (.png, .jpg), e.g. the --out of qcamo attack")
    p.add_argument("--originals", required=True, metavar="DIR",
                   help="folder of the originals (matched through DIR's report.json, else by file stem; a stem that "
                        "several originals share is not matched)")
    p.add_argument("--target", type=options.SCORE, default=50.0, help="score T a file must get below (default 50)")
    p.add_argument("--relative-target", type=options.SCORE, default=None, metavar="DELTA",
                   help="instead of --target, T = score(original) - DELTA per image (for random/tiny models)")
    p.add_argument("--quality", type=options.QUALITY, default=90, help="quality of the JPEG re-encoding (default 90)")
    p.add_argument("--model", default="default", type=options.MODEL, help="'default' (embedded), 'tiny-random' or a .safetensors checkpoint")
    p.add_argument("--encoders", default=None, metavar="A,B,...", type=options.ENCODER_LIST,
                   help="re-encoders (names of qcamo_jax.jpeg.encoders.ENCODERS; default: ImageMagick if installed, "
                        "Pillow 444/420, libjpeg 6b/9f/turbo islow+ifast 444)")
    p.add_argument("--out", default=None, metavar="STEM", type=options.OUTPUT_FILE,
                   help="write STEM.csv and STEM.json (default DIR/evaluation.csv, DIR/evaluation.json)")
    p.add_argument("--batch-size", type=options.BATCH_SIZE, default=4, metavar="N", help="images per model call (default 4)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from qcamo_jax import evaluate, evaluation_report, exitcodes
    from qcamo_jax.errors import QcamoError, skip_line
    from qcamo_jax.models.hub import load_model

    quality = args.quality
    names = evaluate.DEFAULT_ENCODERS if args.encoders is None else args.encoders
    stem = Path(args.out) if args.out else Path(args.dir) / "evaluation"
    own = (*evaluate.OWN_FILES, f"{stem.name.lower()}.csv", f"{stem.name.lower()}.json")
    evaluate.check_folders(args.dir, args.originals)
    evaluation_report.check_replaceable(stem)
    files, originals, unmatched = evaluate.match_originals(evaluate.list_images(args.dir, ignore=own), args.originals)
    for path, reason in unmatched:
        print(skip_line(path, reason), file=sys.stderr)
    if not files:
        raise QcamoError(f"no file has an original of the same name in {args.originals}", args.dir)
    reencoders = evaluate.reencoders(quality, names)
    model = load_model(args.model)
    refused = []

    def skipped(path, reason):
        refused.append(path)
        print(skip_line(path, reason), file=sys.stderr)

    rows = evaluate.evaluate_files(files, originals, evaluate.make_scorer(model, args.batch_size), reencoders,
                                   target=args.target, relative=args.relative_target, skipped=skipped)
    if not rows:
        raise QcamoError(f"no file could be evaluated ({len(refused)} refused)", args.dir)
    summary = evaluation_report.summarize(rows)
    print(evaluation_report.format_table(rows, summary))
    meta = {"model": model.name, "quality": quality, "encoders": list(reencoders),
            "target": None if args.relative_target is not None else args.target, "relative_target": args.relative_target}
    csv_path, json_path = evaluation_report.write_reports(stem, rows, summary, meta)
    print(f"qcamo: wrote {csv_path} and {json_path}", file=sys.stderr)
    # A file left out for want of its original counts like a refused pair: the folder was not all evaluated.
    return exitcodes.INPUT_ERRORS if refused or unmatched else exitcodes.OK
