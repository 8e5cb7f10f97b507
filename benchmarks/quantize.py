"""Speed of the quantizers: one jitted batched call, compilation reported separately, JSON out.

    python benchmarks/quantize.py --model default --batch 4 --repeat 3
    python benchmarks/quantize.py --model tiny-random --size 96x128      # CPU smoke run

Each quantizer call runs at most ``max_evaluations(N)`` candidates per image (the zero-change candidate,
all moves, then the ITP search over ``N = H * W * 3`` switching points, :mod:`qcamo_jax.quantize.search`),
plus one gradient; with ``--survive`` each candidate costs ``1 + E`` forward passes, ``E`` = the set's
unique round trips. How many the search needs depends on the attack: here the adversarial input is the
original plus Gaussian noise (sigma 2 pixel units); ``benchmarks/quantize_search.py`` measures the
count on real attacks. The reported ``model_forward_s`` (one batched forward) gives the overhead of
the quantizer over its model evaluations. The DCT quantizer timed is the paper's
(``DCTConfig.for_imagemagick``: ``--quality``, IFAST, one step along the loss gradient) whatever the
set: with a noise "attack" the default's direction (the attack's change, ``candidates="attack"``)
would time a meaningless search.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def timed(fn, *args, repeat: int = 3):
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        runs.append(time.perf_counter() - t0)
    return first - min(runs), runs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", default=None, help="HxW (default: the model's input size)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--survive", default="imagemagick", help="re-encoder set (both quantizers), e.g. none, common")
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    import photos
    from qcamo_jax.models.hub import load_model
    from qcamo_jax.quantize import dct as qdct
    from qcamo_jax.quantize import spatial

    model = load_model(args.model)
    h, w = map(int, args.size.split("x")) if args.size else model.input_size
    names = ("astronaut", "chelsea", "coffee", "rocket")
    originals = np.stack([photos.photo(names[i % len(names)], (h, w)) for i in range(args.batch)])
    adv = originals.astype(np.float32) + np.random.default_rng(0).normal(0, 2, originals.shape).astype(np.float32)
    clean = jax.jit(model.apply)(model.variables, jnp.asarray(originals, jnp.float32))
    targets = np.asarray(clean) - 1.0
    v = model.variables

    fwd = jax.jit(model.apply)
    _, fwd_runs = timed(fwd, v, jnp.asarray(adv), repeat=args.repeat)
    from qcamo_jax.jpeg.reencoders import ReencoderSet

    survive = ReencoderSet.parse(args.survive)
    cfg = qdct.DCTConfig.for_imagemagick(args.quality, survive=survive)
    scfg = spatial.SpatialConfig(survive=survive)
    fns = {
        "spatial": jax.jit(lambda v, o, a, t: spatial.quantize_spatial(model.score_one, v, o, a, t, scfg)),
        "dct": jax.jit(lambda v, o, a, t: qdct.quantize_dct(model.score_one, v, o, a, t, cfg)),
    }
    out = {
        "model": model.name, "backend": jax.default_backend(), "device": str(jax.devices()[0]), "batch": args.batch,
        "height": h, "width": w, "survive": survive.spec, "model_forward_s": min(fwd_runs), "quantizers": {},
    }
    for name, fn in fns.items():
        compile_s, runs = timed(fn, v, originals, adv, targets, repeat=args.repeat)
        res = fn(v, originals, adv, targets)[-1]
        out["quantizers"][name] = {
            "compile_s": compile_s, "run_s": min(runs), "runs_s": runs, "per_image_s": min(runs) / args.batch,
            "candidates_per_image": int(np.asarray(res.evaluations)[0]) - 1,
            "forward_passes_per_image": (int(np.asarray(res.evaluations)[0]) - 1) * int(np.asarray(res.scores).shape[-1]),
        }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
