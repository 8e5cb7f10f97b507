"""``qcamo attack``: attack images so the quality model scores them below a target.

Thin: parse, join a multi-host job if there is one, call :func:`qcamo_jax.pipeline.run`, print a
one-line summary and return the run's exit code (:mod:`qcamo_jax.exitcodes`). See docs/cli.md, and
docs/scaling.md for multi-host runs.
"""

from __future__ import annotations

import argparse
import sys

from qcamo_jax import exitcodes


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--model", default="default", help="'default' (embedded), 'tiny-random' (tests) or a .safetensors checkpoint")
    p.add_argument("--target", type=float, default=50.0, help="score T to get below (default 50)")
    p.add_argument("--method", default="pgd", choices=("pgd", "fgsm", "ifgsm", "jpeg-pgd"), help="attack (default pgd)")
    p.add_argument("--quantize", default="dct", choices=("dct", "spatial", "none"),
                   help="dct: JPEG coefficients written as .jpg; spatial: 8-bit pixels as .png; none: rounded .png (default dct)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the dct quantizer's output (default 90)")
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="images per accelerator call (default 4)")
    p.add_argument("--devices", default=None, metavar="all|N", help="shard batches over all (or N) devices")
    p.add_argument("--distributed", default="env", choices=("env", "auto"),
                   help="multi-host, one process per host: 'env' joins the job that QCAMO_COORDINATOR, "
                        "QCAMO_NUM_PROCESSES and QCAMO_PROCESS_ID describe, if set (default; unset: one process); "
                        "'auto' lets JAX detect it (SLURM, Open MPI, Kubernetes). See docs/scaling.md")
    p.add_argument("--resume", action="store_true", help="skip images already done in DIR with the same settings")
    p.add_argument("--seed", type=int, default=0, help="base seed (each image's seed also depends on its content)")
    p.add_argument("--steps", type=int, default=None, help="PGD steps per budget try (default 10)")
    p.add_argument("--search-steps", type=int, default=None, help="bisection tries over the L2 budget (default 7, as the paper)")
    p.add_argument("--margin", type=float, default=None,
                   help="aim below T - margin in the attack and the quantizer (safety against other decoders and re-encoders; default 1)")
    p.add_argument("--reference-encoder", default="libjpeg6b-ifast-444", metavar="NAME",
                   help="encoder of the quality-90 re-encoding behind success_jpeg90 (default: ImageMagick-equivalent "
                        "libjpeg6b-ifast-444; 'imagemagick' runs convert)")
    p.add_argument("--no-summary", action="store_true", help="do not write summary.png")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar, compile lines or table of misses (errors and the summary line remain)")
    p.add_argument("--log-json", default=None, metavar="PATH",
                   help="append the run's events as JSON lines to PATH (compile_start/end, progress, image_done, "
                        "image_failed, end with the exit code), for scripts")
    p.epilog = exitcodes.epilog()
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args: argparse.Namespace) -> int:
    from qcamo_jax import pipeline, report, sharding
    from qcamo_jax.errors import QcamoError
    from qcamo_jax.models.hub import load_model

    if args.batch_size < 1:
        raise QcamoError(f"--batch-size must be >= 1, got {args.batch_size}")
    options = {k: v for k, v in (("steps", args.steps), ("search_steps", args.search_steps), ("margin", args.margin))
               if v is not None}
    settings = pipeline.Settings(target=args.target, method=args.method, quantize=args.quantize, quality=args.quality,
                                 seed=args.seed, attack_options=options, reference_encoder=args.reference_encoder)
    # Refuse a bad output path or an empty input list before loading anything heavy; create nothing yet.
    out = pipeline.check_output_dir(args.out)
    inputs = pipeline.discover_inputs(args.inputs, exclude=out)
    if not inputs:
        raise QcamoError("no input images found in " + " ".join(args.inputs))
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
          f"below T={args.target:g}: saved {rate(s['success_saved'])}, after JPEG q90 {rate(s['success_jpeg90'])}; "
          f"report: {out / pipeline.REPORT_JSON}; exit code {result.exit_code}", file=sys.stderr)
    return result.exit_code
