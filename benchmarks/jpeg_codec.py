"""Speed of the JAX JPEG codec (encode + decode) against Pillow (libjpeg-turbo) on the same machine.

    python benchmarks/jpeg_codec.py                        # 64 images of 384x512, JSON on stdout
    python benchmarks/jpeg_codec.py --n 8 --size 96x128    # smoke run
    python benchmarks/jpeg_codec.py --out bench.json

JAX: one ``jit(vmap(decode . encode))`` call over the whole batch, per (DCT, subsampling); compilation
is timed separately; every result is ``block_until_ready``'d. Also timed: the differentiable round trip
with its gradient (``vjp``), what an attack pays per step. Pillow: ``Image.save(quality=Q)`` to memory
and ``Image.open(...).load()`` for each image in a Python loop (libjpeg-turbo with SIMD, one thread).
Reported: images/s (best of ``--repeat`` runs). The machine's load average is recorded because a shared
CPU makes absolute numbers noisy.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _best(fn, repeat):
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return min(runs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64, help="images per batch (default 64)")
    p.add_argument("--size", default="384x512", help="HxW (default 384x512)")
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    from PIL import Image

    import photos
    from qcamo_jax import jpeg
    from qcamo_jax.jpeg import diff

    h, w = map(int, args.size.split("x"))
    names = ("astronaut", "chelsea", "coffee", "rocket")
    rng = np.random.default_rng(0)
    base = [photos.photo(n, (h, w)) for n in names]
    # distinct images: photos with a little noise (so no two encodes are identical)
    images = np.stack([np.clip(base[i % 4] + rng.integers(-2, 3, (h, w, 3)), 0, 255).astype(np.uint8)
                       for i in range(args.n)])
    x = jnp.asarray(images)
    result = {
        "benchmark": "jpeg_codec", "n_images": args.n, "height": h, "width": w, "quality": args.quality,
        "backend": jax.default_backend(), "device": str(jax.devices()[0]), "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0], "python": platform.python_version(), "jax_version": jax.__version__,
        "jax": {}, "pillow": {},
    }

    for dct_method, sub in (("islow", "444"), ("ifast", "444"), ("islow", "420")):
        one = functools.partial(jpeg.roundtrip, quality=args.quality, dct_method=dct_method, subsampling=sub)
        fn = jax.jit(jax.vmap(one))
        t0 = time.perf_counter()
        jax.block_until_ready(fn(x))
        first = time.perf_counter() - t0
        best = _best(lambda: jax.block_until_ready(fn(x)), args.repeat)
        result["jax"][f"encode+decode {dct_method} {sub}"] = {
            "images_per_s": args.n / best, "batch_s": best, "compile_s": max(first - best, 0.0)}

    xf = x.astype(jnp.float32)
    wts = jax.random.normal(jax.random.key(0), xf.shape)
    f = functools.partial(diff.jpeg_roundtrip, quality=args.quality, dct_method="ifast", subsampling="444")

    @jax.jit
    def value_and_grad(a):
        y, pullback = jax.vjp(jax.vmap(f), a)
        return y, pullback(wts)[0]

    t0 = time.perf_counter()
    jax.block_until_ready(value_and_grad(xf))
    first = time.perf_counter() - t0
    best = _best(lambda: jax.block_until_ready(value_and_grad(xf)), args.repeat)
    result["jax"]["differentiable round trip + vjp ifast 444"] = {
        "images_per_s": args.n / best, "batch_s": best, "compile_s": max(first - best, 0.0)}

    for sub, pil_sub in (("444", 0), ("420", 2)):
        def pillow_all():
            for im in images:
                buf = io.BytesIO()
                Image.fromarray(im).save(buf, format="JPEG", quality=args.quality, subsampling=pil_sub)
                buf.seek(0)
                with Image.open(buf) as dec:
                    dec.load()

        best = _best(pillow_all, args.repeat)
        result["pillow"][f"encode+decode islow {sub}"] = {"images_per_s": args.n / best, "batch_s": best}

    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from qcamo_jax.fileio import atomic_write

        with atomic_write(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
