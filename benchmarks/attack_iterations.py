"""How many PGD iterations per bisection try? Success rate and distortion vs gradient evaluations.

Runs the budget search (:func:`qcamo_jax.attacks.budget_search`, 7 tries, eps_max 2000, early stop)
on the tiny KonCept512 with random weights for a grid of ``steps`` x ``schedule`` and prints one JSON
object: per setting, the fraction of images that reached ``T = own score - drop``, the median / mean
L2 distortion (pixel units) and the mean number of gradient evaluations per image.

Random weights give raw scores near 0 with input gradients around 1e-4 points per pixel-L2 unit, so the
score is rescaled (a change of units of the same network) to a median input-gradient norm of ``0.1``
points per pixel-L2 unit; "10 points" then asks for L2 distortions of a few hundred, the regime of
the paper. The landscape of a random network is rougher than a trained one's, which makes this a
demanding test of the step settings.

Usage:
  python benchmarks/attack_iterations.py --grid constant:10,20,40 cosine:5,10,20 --warm both --out iters.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def images(size: tuple[int, int]) -> np.ndarray:
    """12 crops (3 per photo) of scikit-image's bundled photos, ``uint8 [12, H, W, 3]``."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from photos import photo

    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        big = photo(name, (size[0] * 4 // 3, size[1] * 4 // 3))
        for dy, dx in ((0, 0), (size[0] // 3, size[1] // 3), (size[0] // 6, size[1] // 6)):
            out.append(big[dy:dy + size[0], dx:dx + size[1]])
    return np.stack(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", nargs="+", default=["constant:10,20,40", "cosine:5,10,20"],
                   help="schedule:steps,steps,...")
    p.add_argument("--size", default="96x128")
    p.add_argument("--drop", type=float, default=10.0)
    p.add_argument("--refine", type=int, default=8)
    p.add_argument("--warm", choices=["on", "off", "both"], default="both", help="SearchConfig.warm_start")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from qcamo_jax import attacks
    from qcamo_jax.models.hub import load_model

    h, w = (int(v) for v in args.size.split("x"))
    m = load_model("tiny-random")
    x = jnp.asarray(images((h, w)), jnp.float32)
    grads = jax.jit(jax.vmap(jax.grad(m.score_one, argnums=1), in_axes=(None, 0)))(m.variables, x)
    scale = 0.1 / float(jnp.median(jnp.sqrt(jnp.sum(jnp.square(grads), axis=(1, 2, 3)))))
    score = lambda v, im: scale * m.score_one(v, im)  # noqa: E731
    targets = jax.vmap(score, in_axes=(None, 0))(m.variables, x) - args.drop

    rows = []
    for item in args.grid:
        schedule, steps_list = item.split(":")
        warm_values = {"on": [True], "off": [False], "both": [False, True]}[args.warm]
        for steps, warm in ((int(s), wv) for s in steps_list.split(",") for wv in warm_values):
            cfg = attacks.SearchConfig(pgd=attacks.PGDConfig(steps=steps, schedule=schedule), refine_steps=args.refine,
                                       warm_start=warm, first_guess=0.0, rtol=0.0,
                                       budget="bisection")  # the search before issue 14
            run = attacks.make_attack(score, "search", cfg)
            t0 = time.perf_counter()
            adv, res = run(m.variables, x, targets, None)
            jax.block_until_ready(adv)
            row = {"schedule": schedule, "steps": steps, "warm_start": warm, "success": round(float(res.success.mean()), 3),
                   "l2_median": round(float(jnp.median(res.l2)), 1), "l2_mean": round(float(res.l2.mean()), 1),
                   "grads_per_image": round(float(res.iterations.mean()), 1),
                   "seconds_incl_compile": round(time.perf_counter() - t0, 1),
                   "l2": np.round(np.asarray(res.l2), 1).tolist()}
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    report = {"model": "tiny KonCept512, random weights, score rescaled to 0.1 pt per pixel-L2 (median)",
              "images": f"12 crops {h}x{w}", "target": f"own score - {args.drop}", "bisection_steps": 7,
              "eps_max": 2000.0, "refine_steps": args.refine, "rows": rows}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        from qcamo_jax.fileio import atomic_write

        with atomic_write(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
