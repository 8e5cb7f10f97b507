"""``qcamo jpeg IN OUT``: encode an image as JPEG with the JAX encoder (bit-exact libjpeg 6b emulation).

Thin: read IN (:func:`qcamo_jax.imageio.load_rgb`), :func:`qcamo_jax.jpeg.encode`, write the
coefficients with :func:`qcamo_jax.jpeg.write_jpeg` (atomic). ``--dct ifast --subsampling 444 --quality 90``
stores the same coefficients as ``convert IN -quality 90 OUT`` (ImageMagick); ``--dct islow`` the same as
Pillow / cjpeg. See docs/jpeg.md.
"""

from __future__ import annotations

import argparse
import sys

from qcamo_jax.commands import options


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN", type=options.INPUT_FILE, help="input image (PNG, JPEG, ...; read as 8-bit RGB)")
    p.add_argument("output", metavar="OUT", type=options.OUTPUT_FILE, help="output .jpg (written atomically)")
    p.add_argument("--quality", type=options.QUALITY, default=90, metavar="Q", help="IJG quality 1..100 (default 90)")
    p.add_argument("--dct", default="islow", choices=("islow", "ifast", "float"),
                   help="forward DCT of the emulated libjpeg: islow (Pillow, cjpeg), ifast (ImageMagick at Q <= 90), "
                        "float (default islow)")
    p.add_argument("--subsampling", default="444", choices=("444", "420"),
                   help="chroma sampling: 444 (none) or 420 (2x2, libjpeg box filter) (default 444)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import jax

    from qcamo_jax import jpeg
    from qcamo_jax.discovery import resolve_path
    from qcamo_jax.display import format_size
    from qcamo_jax.errors import QcamoError
    from qcamo_jax.fileio import atomic_write_bytes
    from qcamo_jax.imageio import load_rgb

    if resolve_path(Path(args.output)) == resolve_path(Path(args.input)):
        raise QcamoError("is the input: an input is never overwritten; choose another output path", args.output)
    if Path(args.output).suffix.lower() not in (".jpg", ".jpeg", ".jpe", ".jfif"):
        print(f"qcamo: warning: {args.output}: a JPEG file is written under a name that does not say JPEG",
              file=sys.stderr)
    image = load_rgb(args.input)
    encode = jax.jit(jpeg.encode, static_argnums=1, static_argnames=("dct_method", "subsampling"))
    coeffs = encode(image, args.quality, dct_method=args.dct, subsampling=args.subsampling)
    data = jpeg.jpeg_bytes(jax.device_get(coeffs))
    try:
        atomic_write_bytes(args.output, data)
    except OSError as exc:
        raise QcamoError(f"cannot write ({exc.strerror or exc})", args.output) from None
    h, w, _ = image.shape
    print(f"qcamo: wrote {args.output} ({format_size(w, h)}, quality {args.quality}, {args.dct} DCT, {args.subsampling}, "
          f"{len(data)} bytes)", file=sys.stderr)
    return 0
