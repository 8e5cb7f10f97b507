"""Gradients per image of the budget search variants: success, mean L2 and gradient evaluations.

Runs :func:`qcamo_jax.attacks.budget_search` with several :class:`~qcamo_jax.attacks.SearchConfig`
variants on the same images and targets and prints one JSON object: per variant, the fraction of images
below ``T = own score - drop``, the mean / median L2 of the returned images (pixel units; the mean also
over the images that *every* variant made adversarial, so that variants are compared on the same
images), the mean gradient evaluations per image (``AttackResult.iterations``) and the forward-only
passes per image (the refinement's, not counted as gradients).

Images: 30 crops (3 per photo) of 10 photos: the four held-out pictures in ``tests/data/heldout/``, the
four in ``examples/`` and scikit-image's ``rocket`` and ``motorcycle_left``, each resized to cover 4/3
of ``--size`` and cropped at three offsets.

Models: ``tiny`` = the tiny KonCept512 with random weights, score rescaled to a median input gradient of
0.1 points per pixel-L2 unit (as ``benchmarks/attack_iterations.py``: a random network's raw scores sit
near 0); ``default`` = the embedded ``qcamo-small``.

Usage:
  python benchmarks/attack_gradients.py --model default --size 96x128 --out results.json
  python benchmarks/attack_gradients.py --model tiny --variants paper previous_default default
  python benchmarks/attack_gradients.py --model tiny --images tiny-test --variants paper default g15_s5_r10
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from report_json import emit  # noqa: E402  (benchmarks/ is on sys.path: run as a script)


def load_photos(size: tuple[int, int]) -> tuple[np.ndarray, list[str]]:
    """``uint8 [30, H, W, 3]`` crops and their names (see the module docstring)."""
    from PIL import Image

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from photos import photo

    h, w = size
    big = (h * 4 // 3, w * 4 // 3)
    sources = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "data", "heldout", "*.png"))
                       + glob.glob(os.path.join(ROOT, "examples", "*.jpg"))):
        with Image.open(path) as im:
            im = im.convert("RGB")
            scale = max(big[0] / im.height, big[1] / im.width)
            im = im.resize((max(big[1], round(im.width * scale)), max(big[0], round(im.height * scale))),
                           Image.BICUBIC)
            top, left = (im.height - big[0]) // 2, (im.width - big[1]) // 2
            sources[os.path.basename(path)] = np.asarray(im.crop((left, top, left + big[1], top + big[0])))
    for name in ("rocket", "motorcycle_left"):
        sources[name] = photo(name, big)
    out, names = [], []
    for name, arr in sources.items():
        for dy, dx in ((0, 0), (h // 3, w // 3), (h // 6, w // 6)):
            out.append(arr[dy:dy + h, dx:dx + w])
            names.append(f"{name}@{dy},{dx}")
    return np.stack(out), names


def variants():
    """Named search configurations: the paper's procedure, the previous default and the candidates."""
    from qcamo_jax.attacks import PGDConfig, SearchConfig

    return {
        "paper": SearchConfig(pgd=PGDConfig(steps=10, schedule="constant"), warm_start=False, refine_steps=0,
                              first_guess=0.0, rtol=0.0),
        "previous_default": SearchConfig(pgd=PGDConfig(steps=10), warm_start=True, refine_steps=8, first_guess=0.0,
                                         rtol=0.0),
        "default": SearchConfig(),
        "g1_s5_r05": SearchConfig(pgd=PGDConfig(steps=5), first_guess=1.0, rtol=0.05),
        "g15_s5_r10": SearchConfig(pgd=PGDConfig(steps=5), first_guess=1.5, rtol=0.1),
        "g15_s4_r20": SearchConfig(pgd=PGDConfig(steps=4), first_guess=1.5, rtol=0.2),
        "g15_s5_r15": SearchConfig(pgd=PGDConfig(steps=5), first_guess=1.5, rtol=0.15),
        "g15_s5_r17": SearchConfig(pgd=PGDConfig(steps=5), first_guess=1.5, rtol=0.17),
        "g15_s5_r20": SearchConfig(pgd=PGDConfig(steps=5), first_guess=1.5, rtol=0.2),
        "g15_s4_r10": SearchConfig(pgd=PGDConfig(steps=4), first_guess=1.5, rtol=0.1),
        "g2_s5_r10": SearchConfig(pgd=PGDConfig(steps=5), first_guess=2.0, rtol=0.1),
        "g125_s5_r15": SearchConfig(pgd=PGDConfig(steps=5), first_guess=1.25, rtol=0.15),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["tiny", "default"], default="default")
    p.add_argument("--size", default="96x128")
    p.add_argument("--drop", type=float, default=10.0)
    p.add_argument("--variants", nargs="+", default=None)
    p.add_argument("--images", choices=["crops30", "tiny-test"], default="crops30",
                   help="crops30: the 30 crops above; tiny-test: the 20 crops 80x96 of "
                        "tests/test_attacks_search.py's tiny KonCept512 test (--size is ignored)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from qcamo_jax import attacks
    from qcamo_jax.models.hub import load_model

    h, w = (int(v) for v in args.size.split("x"))
    if args.images == "tiny-test":
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from test_attacks_search import _test_images

        h, w = 80, 96
        x = _test_images((h, w), 5)
        names = [f"tiny-test-{i}" for i in range(len(x))]
    else:
        raw, names = load_photos((h, w))
        x = jnp.asarray(raw, jnp.float32)
    m = load_model("tiny-random" if args.model == "tiny" else "default")
    if args.model == "tiny":
        grads = jax.jit(jax.vmap(jax.grad(m.score_one, argnums=1), in_axes=(None, 0)))(m.variables, x)
        scale = 0.1 / float(jnp.median(jnp.sqrt(jnp.sum(jnp.square(grads), axis=(1, 2, 3)))))
        score = lambda v, im: scale * m.score_one(v, im)  # noqa: E731
    else:
        score = m.score_one
    targets = jax.vmap(score, in_axes=(None, 0))(m.variables, x) - args.drop

    table = variants()
    chosen = args.variants or list(table)
    rows, l2s, successes = [], {}, {}
    for name in chosen:
        cfg = table[name]
        run = attacks.make_attack(score, "search", cfg)
        t0 = time.perf_counter()
        adv, res = jax.block_until_ready(run(m.variables, x, targets, None))
        l2s[name], successes[name] = np.asarray(res.l2), np.asarray(res.success)
        row = {"variant": name, "success": round(float(successes[name].mean()), 3),
               "l2_mean": round(float(l2s[name].mean()), 1), "l2_median": round(float(np.median(l2s[name])), 1),
               "grads_per_image": round(float(np.asarray(res.iterations).mean()), 2),
               "missed": np.flatnonzero(~successes[name]).tolist(),
               "forwards_per_image": cfg.refine_steps if cfg.refine_steps else 0,
               "seconds_incl_compile": round(time.perf_counter() - t0, 1),
               "loadavg": round(os.getloadavg()[0], 2),
               "config": {"steps": cfg.pgd.steps, "schedule": cfg.pgd.schedule, "warm_start": cfg.warm_start,
                          "refine_steps": cfg.refine_steps, "first_guess": cfg.first_guess, "rtol": cfg.rtol,
                          "bisection_steps": cfg.bisection_steps}}
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    common = np.logical_and.reduce([successes[n] for n in chosen])
    for row in rows:
        row["l2_mean_common"] = round(float(l2s[row["variant"]][common].mean()), 1) if common.any() else None
    report = {"model": {"tiny": "tiny KonCept512, random weights, score rescaled to 0.1 pt per pixel-L2 (median)",
                        "default": "embedded default model (qcamo-small)"}[args.model],
              "images": f"{len(names)} crops {h}x{w}", "names": names, "target": f"own score - {args.drop}",
              "eps_max": 2000.0, "common_successes": int(common.sum()), "rows": rows}
    return emit(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
