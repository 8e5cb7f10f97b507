"""Quantizer search cost (issue 14 item 3): candidates per image and distortion, ITP vs the paper's bisection.

On the results photos (``scripts/make_results.py``'s set: scikit-image's four, ``tests/data/heldout``,
``tests/data/corpus512``, 384 x 512 pixels, H x W) that the model scores >= T, one PGD budget search per
photo (the ``qcamo attack`` default attack, on the plain score, margin 1) is shared by every variant;
then the DCT quantizer (default written file, ``--survive`` set, margin 1) runs once per search variant:

* ``bisection``: the midpoint each step down to adjacent candidates (``search="bisection"``,
  ``search_rtol=0``): the search before issue 14, with the paper's candidates (one step along the
  set's gradient, ``candidates="gradient"``);
* ``itp-exact``: the ITP search down to adjacent candidates (``search_rtol=0``), same candidates;
* ``itp-gradient``: the ITP search (``search_rtol = 1/256``), same candidates (the default before the
  attack's direction; named ``itp`` in ``results-cpu-quantize-search.json``);
* ``itp``: today's default (ITP, candidates along the attack's change).

Each output is written as the pipeline writes it and re-encoded by the REAL library of every member
of the set (:func:`qcamo_jax.evaluate.score_survival`). One JSON object: per variant, mean and max
candidates per image, forward passes per image (``candidates * (1 + E)``, plus the gradient's ``1 + E``
passes where the candidates need one), success under the real libraries, mean PSNR and its per-photo difference to the first variant named,
and the quantizer's wall time (compilation apart: the first batch is timed twice).

    python benchmarks/quantize_search.py --json benchmarks/results-cpu-quantize-search.json
    python benchmarks/quantize_search.py --limit 2 --size 96 128   # smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

#: variant -> DCTConfig search options.
VARIANTS = {
    "bisection": dict(search="bisection", search_rtol=0.0, candidates="gradient"),
    "itp-exact": dict(search="itp", search_rtol=0.0, candidates="gradient"),
    "itp-gradient": dict(candidates="gradient"),
    "itp": dict(),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--target", type=float, default=50.0)
    p.add_argument("--survive", default="common")
    p.add_argument("--size", type=int, nargs=2, default=(384, 512), metavar=("H", "W"))
    p.add_argument("--limit", type=int, default=None, help="first N photos only")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--json", default=None)
    p.add_argument("--attack-cache", default=None, metavar="NPZ",
                   help="keep the attack's outputs here and reuse them on a rerun with the same photos and options")
    return p.parse_args(argv)


def photo_set(size, limit):
    """The results photos at ``size`` (uint8 [N, H, W, 3]) and their names."""
    import make_results
    from written_quality import load

    with tempfile.TemporaryDirectory() as tmp:
        files = make_results.prepare_photos(Path(tmp), None)
        arrays = [load(f, size) for f in files]
    names = [f.name for f in files]
    return (np.stack(arrays), names) if limit is None else (np.stack(arrays[:limit]), names[:limit])


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax
    import jax.numpy as jnp

    from qcamo_jax import evaluate, metrics
    from qcamo_jax.attacks import api
    from qcamo_jax.jpeg.reencoders import ReencoderSet
    from qcamo_jax.models.hub import load_model
    from qcamo_jax.pipeline import Settings, methods
    from qcamo_jax.quantize import dct as qdct

    survive = ReencoderSet.parse(args.survive)
    model = load_model(args.model)
    images, names = photo_set(tuple(args.size), args.limit)
    score = evaluate.make_scorer(model, batch_size=args.batch)
    clean = np.asarray(score(list(images)))
    keep = clean >= args.target
    images, names, clean = images[keep], [n for n, k in zip(names, keep) if k], clean[keep]
    n, b = len(images), args.batch
    pad = -n % b
    batch_images = np.concatenate([images, images[:pad]]) if pad else images
    targets = np.full((len(batch_images),), args.target, np.float32)
    print(f"{n} photos score >= {args.target}", file=sys.stderr)

    settings = Settings(target=args.target, survive=args.survive)
    method, attack_cfg = methods.attack_config(settings)
    attack = jax.jit(api.attack_fn(methods.attack_score_fn(model.score_one, settings), method, attack_cfg))
    keys = jax.random.split(jax.random.PRNGKey(0), len(batch_images))
    cache = Path(args.attack_cache) if args.attack_cache else None
    stamp = np.asarray(hashlib.sha256(json.dumps([names, args.model, args.target, args.survive, list(args.size), b,
                                                  images.tobytes().hex()[:4096]]).encode()).hexdigest())
    if cache is not None and cache.is_file() and np.array_equal(np.load(cache)["stamp"], stamp):
        adv = np.load(cache)["adv"]
        print(f"attack outputs reused from {cache}", file=sys.stderr)
    else:
        adv = []
        t0 = time.perf_counter()
        for s in range(0, len(batch_images), b):
            a, _ = attack(model.variables, jnp.asarray(batch_images[s:s + b], jnp.float32),
                          jnp.asarray(targets[s:s + b]), keys[s:s + b])
            adv.append(np.asarray(jax.block_until_ready(a)))
        adv = np.concatenate(adv)
        print(f"attack {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        if cache is not None:
            np.savez(cache, adv=adv, stamp=stamp)

    base = methods.quantizer_config(settings)
    e = len(base.survive.emulations(base.subsampling))
    work = Path(tempfile.mkdtemp(prefix="qcamo_qsearch_"))
    out = {"command": "python benchmarks/quantize_search.py " + " ".join(sys.argv[1:]), "model": args.model,
           "size_hw": list(args.size), "photos": names, "clean": clean.round(2).tolist(), "target": args.target,
           "survive": survive.spec, "round_trips": e, "variants": {}}
    psnr_ref = None
    for name in args.variants:
        cfg = base._replace(**VARIANTS[name])
        fn = jax.jit(lambda v, o, a, t: qdct.quantize_dct(model.score_one, v, o, a, t, cfg))
        evals, grads, psnr, paths, seconds, compile_s = [], [], [], [], 0.0, 0.0
        for s in range(0, len(batch_images), b):
            args_s = (model.variables, batch_images[s:s + b], adv[s:s + b], targets[s:s + b])
            if s == 0:  # compile apart
                t0 = time.perf_counter()
                jax.block_until_ready(fn(*args_s))
                compile_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            coeffs, decoded, res = jax.block_until_ready(fn(*args_s))
            seconds += time.perf_counter() - t0
            coeffs = jax.tree.map(np.asarray, coeffs)
            for i in range(min(b, n - s)):
                paths.append(work / f"{name}_{s + i}.jpg")
                qdct.write_jpeg(paths[-1], qdct.unbatch(coeffs, i))
                evals.append(int(np.asarray(res.evaluations)[i]) - int(np.asarray(res.gradients)[i]))  # candidates
                grads.append(int(np.asarray(res.gradients)[i]))
                psnr.append(float(metrics.psnr_one(np.asarray(decoded)[i], batch_images[s + i])))
        real = evaluate.score_survival(paths, survive, score, targets[:n])
        evals_a, psnr_a = np.asarray(evals), np.asarray(psnr)
        row = {
            "candidates_mean": float(evals_a.mean()), "candidates_max": int(evals_a.max()),
            "candidates": evals,
            "forward_passes_mean": float((evals_a.mean() + np.mean(grads)) * (1 + e)),
            "gradients_mean": float(np.mean(grads)),
            "candidates_rule": cfg.candidates,
            "success_real": float(np.mean([r.success for r in real])),
            "mean_psnr": float(psnr_a.mean()), "psnr": psnr_a.round(3).tolist(),
            "quantizer_seconds": round(seconds, 1), "quantizer_seconds_per_image": round(seconds / n, 2),
            "compile_and_first_batch_seconds": round(compile_s, 1),
        }
        if psnr_ref is None:
            psnr_ref = psnr_a
        else:
            d = psnr_a - psnr_ref
            row["psnr_minus_first"] = {"mean": float(d.mean()), "min": float(d.min()), "max": float(d.max())}
        out["variants"][name] = row
        print(name, json.dumps({k: v for k, v in row.items() if k not in ("candidates", "psnr")}), file=sys.stderr)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        from qcamo_jax.fileio import atomic_write

        with atomic_write(Path(args.json), "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
