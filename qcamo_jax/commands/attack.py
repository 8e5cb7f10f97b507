"""``qcamo attack``: attack images so the quality model scores them below a target.

Thin: parse, join a multi-host job if there is one, call :func:`qcamo_jax.pipeline.run`, print a
one-line summary and return the run's exit code (:mod:`qcamo_jax.exitcodes`). See docs/cli.md, and
docs/scaling.md for multi-host runs.
"""

from __future__ import annotations

import argparse
import sys

from qcamo_jax import exitcodes
from qcamo_jax.commands import options


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--out", required=True, metavar="DIR", type=options.OUTPUT_DIR, help="output folder (created if missing)")
    p.add_argument("--model", default="default", type=options.MODEL, help="'default' (embedded), 'tiny-random' (tests) or a .safetensors checkpoint")
    p.add_argument("--target", type=options.SCORE, default=50.0, help="score T to get below (default 50)")
    p.add_argument("--method", default="pgd", choices=("pgd", "fgsm", "ifgsm", "jpeg-pgd"), help="attack (default pgd)")
    p.add_argument("--quantize", default="dct", choices=("dct", "spatial", "none"),
                   help="dct: JPEG coefficients written as .jpg; spatial: 8-bit pixels as .png; none: rounded .png (default dct)")
    p.add_argument("--survive", type=options.SURVIVE, default="common", metavar="SET",
                   help="re-encoders every output must stay below T after, each run by its real library to check: "
                        "'common' (default: ImageMagick q90, Pillow q90 4:4:4 and 4:2:0, libjpeg-turbo islow 4:2:0 "
                        "q75, 80, 85, 90, 95: only those five, not the qualities between), 'imagemagick' (the paper's single encoder), 'none' (as saved only), or "
                        "ENCODER:QUALITIES items, e.g. imagemagick:90,pillow-420:85-95/5")
    p.add_argument("--quality", type=options.QUALITY, default=None,
                   help="JPEG quality the dct quantizer writes its file at (default: 100 for a set, the measured "
                        "best, docs/quantize.md; the member's quality for --survive imagemagick)")
    p.add_argument("--max-l2", type=options.MAX_L2, default=None, metavar="L2",
                   help="largest accepted L2 distortion of an output (pixel units); an image that cannot meet both "
                        "the target and the limit is reported as failing, with the best it reached")
    p.add_argument("--min-psnr", type=options.MIN_PSNR, default=None, metavar="DB",
                   help="smallest accepted PSNR of an output against its input (dB), as --max-l2")
    p.add_argument("--batch-size", type=options.BATCH_SIZE, default=4, metavar="N", help="images per accelerator call (default 4)")
    p.add_argument("--devices", default=None, type=options.DEVICES, metavar="all|N", help="shard batches over all (or N) devices")
    p.add_argument("--distributed", default="env", choices=("env", "auto"),
                   help="multi-host, one process per host: 'env' joins the job that QCAMO_COORDINATOR, "
                        "QCAMO_NUM_PROCESSES and QCAMO_PROCESS_ID describe, if set (default; unset: one process); "
                        "'auto' lets JAX detect it (SLURM, Open MPI, Kubernetes). See docs/scaling.md")
    p.add_argument("--resume", action="store_true", help="skip images already done in DIR with the same settings")
    p.add_argument("--seed", type=options.SEED, default=0, help="base seed (each image's seed also depends on its content)")
    p.add_argument("--search", choices=("thorough", "fast", "paper"), default=None,
                   help="the budget search: 'thorough' (default: at most 10 steps per try, all 7 bisection tries; the "
                        "best PSNR after the quantizer), 'fast' (5 steps, first-order first budget, secant, early "
                        "exit: a third of the gradients, -0.2 to -1.2 dB) or 'paper' (the paper's procedure); "
                        "docs/attacks.md")
    p.add_argument("--steps", type=options.STEPS, default=None,
                   help="most PGD steps per budget try; a try stops once below T - margin, so the report's "
                        "'iterations' (gradients per image) can be far fewer (default 10; 5 with --search fast)")
    p.add_argument("--search-steps", type=options.SEARCH_STEPS, default=None, help="most tries over the L2 budget (default 7, as the paper)")
    p.add_argument("--margin", type=options.MARGIN, default=None,
                   help="aim below T - margin in the attack and the quantizer (safety against other decoders and re-encoders; default 1)")
    p.add_argument("--no-summary", action="store_true", help="do not write summary.png")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar, compile lines or table of misses (errors and the summary line remain)")
    p.add_argument("--log-json", default=None, metavar="PATH", type=options.OUTPUT_FILE,
                   help="append the run's events as JSON lines to PATH (compile_start/end, progress, image_done, "
                        "image_failed, end with the exit code), for scripts")
    p.epilog = exitcodes.epilog()
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args: argparse.Namespace) -> int:
    from qcamo_jax import pipeline, report, sharding
    from qcamo_jax.errors import QcamoError
    from qcamo_jax.models.hub import load_model

    options = {k: v for k, v in (("search", args.search), ("steps", args.steps), ("search_steps", args.search_steps),
                                 ("margin", args.margin)) if v is not None}
    settings = pipeline.Settings(target=args.target, method=args.method, quantize=args.quantize, quality=args.quality,
                                 seed=args.seed, attack_options=options, survive=args.survive, max_l2=args.max_l2,
                                 min_psnr=args.min_psnr)
    # Refuse a bad output path or an empty input list before loading anything heavy; create nothing yet.
    out = pipeline.check_output_dir(args.out)
    inputs = pipeline.discover_inputs(args.inputs, exclude=out)
    if not inputs:
        raise QcamoError("no input images found in " + " ".join(args.inputs))
    names = pipeline.output_names(inputs, settings.extension)
    pipeline.check_inputs_spared(out, args.inputs, inputs, names)
    pipeline.check_existing_files_are_runs(out, names, len(inputs), summary=not args.no_summary)
    # Join the multi-host job (if any) before anything touches a device: loading the model does.
    main_process = True
    if sharding.initialize_distributed(auto_detect=args.distributed == "auto"):
        import jax

        main_process = jax.process_index() == 0
    model = load_model(args.model)
    result = pipeline.run(inputs, out, model, settings, batch_size=args.batch_size, resume=args.resume,
                          devices=args.devices, progress=not args.quiet, summary=not args.no_summary,
                          log_json=args.log_json)
    # Every process of a multi-host job has every record, so the same exit code; process 0 tells the story.
    if not main_process:
        return result.exit_code
    s = report.summarize(result.records)
    rate = lambda v: "n/a" if v is None else f"{100 * v:.0f}%"
    print(f"qcamo: {s['attacked']}/{s['inputs']} images attacked ({result.reused} reused), {s['refused']} refused; "
          f"below T={args.target:g}: saved {rate(s['success_saved'])}, after every re-encoder of --survive "
          f"{args.survive} {rate(s['success'])}; report: {out / pipeline.REPORT_JSON}; exit code {result.exit_code}",
          file=sys.stderr)
    return result.exit_code
