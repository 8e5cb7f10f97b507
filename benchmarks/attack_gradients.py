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


#: Crop offsets per photo, as fractions ``(dy / h, dx / w)``: the first three make ``crops30``, all six ``crops60``.
CROP_OFFSETS = ((0, 0), (1 / 3, 1 / 3), (1 / 6, 1 / 6), (0, 1 / 3), (1 / 3, 0), (1 / 4, 1 / 12))


def load_photos(size: tuple[int, int], per_photo: int = 3) -> tuple[np.ndarray, list[str]]:
    """``uint8 [10 * per_photo, H, W, 3]`` crops and their names (see the module docstring)."""
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
        for fy, fx in CROP_OFFSETS[:per_photo]:
            dy, dx = int(h * fy), int(w * fx)
            out.append(arr[dy:dy + h, dx:dx + w])
            names.append(f"{name}@{dy},{dx}")
    return np.stack(out), names


#: ``--images photos``: scikit-image photos, at the model's input size.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def variants():
    """Named search configurations: the paper's procedure, the presets and the candidates measured.

    ``gNN_sS_rRR`` = ``first_guess`` N/10 (125: 1.25), ``S`` PGD steps per try, ``rtol`` RR/100, bisection
    budgets; ``sec_...`` the same with secant budgets (``budget="secant"``, the default's rule).
    """
    from qcamo_jax.attacks import PGDConfig, SearchConfig

    table = {"paper": SearchConfig.paper(), "thorough": SearchConfig.thorough(), "default": SearchConfig(),
             # the default's settings before the thorough preset got its name (identical to "thorough")
             "previous_default": SearchConfig.thorough()}
    for guess, steps, rtol in ((1.0, 5, 0.05), (1.5, 5, 0.1), (1.5, 4, 0.2), (1.5, 5, 0.15), (1.5, 5, 0.17),
                               (1.5, 5, 0.2), (1.5, 4, 0.1), (2.0, 5, 0.1), (1.25, 5, 0.15), (1.5, 7, 0.15),
                               (1.5, 4, 0.15), (1.5, 7, 0.1), (1.5, 10, 0.15)):
        name = f"g{str(guess).replace('.', '').rstrip('0')}_s{steps}_r{round(rtol * 100):02d}"
        for budget, prefix in (("bisection", ""), ("secant", "sec_")):
            table[prefix + name] = SearchConfig(pgd=PGDConfig(steps=steps), first_guess=guess, rtol=rtol, budget=budget)
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["tiny", "default"], default="default")
    p.add_argument("--size", default="96x128")
    p.add_argument("--drop", type=float, default=10.0)
    p.add_argument("--variants", nargs="+", default=None)
    p.add_argument("--images", choices=["crops30", "crops60", "tiny-test", "photos"], default="crops30",
                   help="crops30: the 30 crops above; crops60: 6 crops per photo (CROP_OFFSETS); tiny-test: the 20 crops 80x96 of "
                        "tests/test_attacks_search.py's tiny KonCept512 test (--size is ignored); photos: "
                        "scikit-image's astronaut, chelsea, coffee, rocket at the model's input size (384x512 "
                        "for the default model), T = 50 for those scoring above 50 and T = 30 for those above "
                        "30 (tests/test_attacks_search.py's slow test), one image at a time as the CPU engine; "
                        "")
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
        raw, names = load_photos((h, w), 6 if args.images == "crops60" else 3)
        x = jnp.asarray(raw, jnp.float32)
    m = load_model("tiny-random" if args.model == "tiny" else "default")
    fixed_targets = None
    if args.images == "photos":
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from photos import photo

        h, w = m.input_size
        full = jnp.asarray(np.stack([photo(n, (h, w)) for n in PHOTOS]), jnp.float32)
        q0 = np.asarray(jax.vmap(m.score_one, in_axes=(None, 0))(m.variables, full))
        pairs = [(i, t) for t in (50.0, 30.0) for i in range(len(PHOTOS)) if q0[i] > t]
        x = full[np.asarray([i for i, _ in pairs])]
        names = [f"{PHOTOS[i]}@T{t:g}" for i, t in pairs]
        fixed_targets = jnp.asarray([t for _, t in pairs], jnp.float32)
    if args.model == "tiny":
        grads = jax.jit(jax.vmap(jax.grad(m.score_one, argnums=1), in_axes=(None, 0)))(m.variables, x)
        scale = 0.1 / float(jnp.median(jnp.sqrt(jnp.sum(jnp.square(grads), axis=(1, 2, 3)))))
        score = lambda v, im: scale * m.score_one(v, im)  # noqa: E731
    else:
        score = m.score_one
    targets = jax.vmap(score, in_axes=(None, 0))(m.variables, x) - args.drop
    if fixed_targets is not None:
        targets = fixed_targets

    table = variants()
    chosen = args.variants or list(table)
    rows, l2s, successes = [], {}, {}
    for name in chosen:
        cfg = table[name]
        run = attacks.make_attack(score, "search", cfg)
        t0 = time.perf_counter()
        if args.images == "photos":  # full-size images one at a time, as the CPU engine runs them
            parts = [run(m.variables, x[i:i + 1], targets[i:i + 1], None) for i in range(len(x))]
            adv, res = jax.block_until_ready(jax.tree.map(lambda *a: jnp.concatenate(a), *parts))
        else:
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
              "images": f"{len(names)} {'photos' if args.images == 'photos' else 'crops'} {h}x{w}", "names": names,
              "target": "50 / 30 (see names)" if args.images == "photos" else f"own score - {args.drop}",
              "eps_max": 2000.0, "common_successes": int(common.sum()), "rows": rows}
    return emit(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
