"""``qcamo convert SRC DST``: KonCept512 weights (Keras ``.h5`` or PyTorch ``.pth``) -> qcamo ``.safetensors``."""

from __future__ import annotations

import argparse
import os

from qcamo_jax.commands import options
from qcamo_jax.errors import QcamoError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", type=options.INPUT_FILE,
                        help="KonIQ Keras .h5 (koncep512-trained-model.h5) or MediaEval .pth (KonCept512.pth)")
    parser.add_argument("dst", metavar="DST", type=options.OUTPUT_FILE, help="output .safetensors file (written atomically)")


def run(args: argparse.Namespace) -> int:
    from qcamo_jax.models.convert import convert_file

    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        raise QcamoError("DST must differ from SRC", args.dst)
    report = convert_file(args.src, args.dst)
    print(f"converted {report.source} -> {report.destination}")
    print(f"variant: {report.variant}")
    print(f"parameters: {report.n_params:,}")
    print(f"source sha256: {report.source_sha256}")
    print(f"sha256: {report.sha256}")
    return 0
