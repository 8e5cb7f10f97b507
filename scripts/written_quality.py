"""Which written JPEG (quality, DCT, step bound, gradient) survives a re-encoder set best? (issue 12 item 3)

For a few photos it runs one PGD attack (the paper's budget search, on the plain score with a margin),
then the DCT quantizer once per written-file option, all with the same re-encoder set (default
``common``), writes each output and re-encodes it with the REAL libraries of the set
(:func:`qcamo_jax.evaluate.score_survival`). It prints one JSON object: per option, the share of photos
whose worst case over the set (real libraries) is below T, per-member success, mean PSNR, and the
quantizer's own (emulated) success.

Usage (the numbers in docs/quantize.md)::

    python scripts/written_quality.py --size 192 256 --out docs/written_quality.json
    python scripts/written_quality.py --cost   # forward passes per image for each set size, no model run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PHOTOS = ("tests/data/heldout/mate-backgrounds_Dune.png", "tests/data/heldout/mate-backgrounds_LadyBird.png",
          "tests/data/heldout/ukui-wallpapers_goldfish.png", "examples/chelsea.jpg", "examples/coffee.jpg",
          "examples/astronaut.jpg")

#: name -> DCTConfig options (quality, dct_method, max_steps, gradient, candidates) of the written file. The
#: options measured before the attack's direction existed name the gradient rule they were measured with.
OPTIONS = {
    "q90-ifast-s1": dict(quality=90, dct_method="ifast", max_steps=1, candidates="gradient"),
    "q90-islow-s1": dict(quality=90, dct_method="islow", max_steps=1, candidates="gradient"),
    "q95-islow-s2": dict(quality=95, dct_method="islow", max_steps=2, candidates="gradient"),
    "q100-islow-s4": dict(quality=100, dct_method="islow", max_steps=4, candidates="gradient"),
    "q95-islow-s2-mean": dict(quality=95, dct_method="islow", max_steps=2, gradient="mean", candidates="gradient"),
    "q90-islow-s1-worst": dict(quality=90, dct_method="islow", max_steps=1, gradient="worst", candidates="gradient"),
    "q90-islow-s2": dict(quality=90, dct_method="islow", max_steps=2, candidates="gradient"),
    "q90-islow-s3": dict(quality=90, dct_method="islow", max_steps=3, candidates="gradient"),
    "q90-islow-s3-worst": dict(quality=90, dct_method="islow", max_steps=3, gradient="worst", candidates="gradient"),
    "q90-islow-s5": dict(quality=90, dct_method="islow", max_steps=5, candidates="gradient"),
    "q95-islow-s10": dict(quality=95, dct_method="islow", max_steps=10, candidates="gradient"),
    "q98-islow-s20": dict(quality=98, dct_method="islow", max_steps=20, candidates="gradient"),
    "q100-islow-s40": dict(quality=100, dct_method="islow", max_steps=40, candidates="gradient"),
    "q100-islow-s40-attack": dict(quality=100, dct_method="islow", max_steps=40, candidates="attack"),
    "q100-islow-s80-attack": dict(quality=100, dct_method="islow", max_steps=80, candidates="attack"),
    "q95-islow-s10-attack": dict(quality=95, dct_method="islow", max_steps=10, candidates="attack"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--photos", nargs="+", default=list(PHOTOS))
    p.add_argument("--size", nargs=2, type=int, default=[192, 256], help="H W (cover-resize and centre crop)")
    p.add_argument("--target", type=float, default=50.0, help="T; photos scoring below T + drop get T = score - drop")
    p.add_argument("--drop", type=float, default=5.0)
    p.add_argument("--survive", default="common")
    p.add_argument("--margin", type=float, default=0.5, help="quantizer margin (score units)")
    p.add_argument("--attack-margin", type=float, default=3.0, help="PGD goes below T - this")
    p.add_argument("--attack-survive", action="store_true",
                   help="the PGD search minimises the mean score over the set's round trips (not the plain score)")
    p.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    p.add_argument("--between", default="pillow-420:75-95", help="extra real re-encoders checked, not optimised for")
    p.add_argument("--cost", action="store_true", help="print forward passes per image per set size and exit")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def load(path: Path, size) -> np.ndarray:
    from PIL import Image

    im = Image.open(path).convert("RGB")
    h, w = size
    scale = max(h / im.height, w / im.width)
    nh, nw = max(h, round(im.height * scale)), max(w, round(im.width * scale))
    im = im.resize((nw, nh), Image.BICUBIC)
    top, left = (nh - h) // 2, (nw - w) // 2
    return np.asarray(im.crop((left, top, left + w, top + h)), dtype=np.uint8)


def cost_table(size) -> list[dict]:
    """Forward passes per image of the DCT quantizer for each set: the most the compiled program makes
    (the ITP search's worst case; ``benchmarks/quantize_search.py`` measures the usual count)."""
    from qcamo_jax.jpeg.reencoders import PROFILES, ReencoderSet
    from qcamo_jax.quantize.search import max_evaluations

    h, w = size
    n = 3 * (-(-h // 8) * 8) * (-(-w // 8) * 8)  # coefficients of a 4:4:4 file (upper bound of moves)
    candidates = max_evaluations(n)
    rows = []
    for spec in ("none", "imagemagick", "imagemagick:90,pillow-444:90", "common", "common,pillow-420:75-95"):
        s = PROFILES.get(spec) or ReencoderSet.parse(spec)
        e = len(s.emulations("444"))
        rows.append({"survive": spec, "members": len(s), "round_trips": e, "candidates": candidates,
                     "forward_passes": candidates * (1 + e), "gradient_passes": 1 + e,
                     "gradient_passes_attack_direction": 0})
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cost:
        print(json.dumps({"size": args.size, "rows": cost_table(args.size)}, indent=1))
        return 0
    import jax
    import jax.numpy as jnp

    from qcamo_jax import evaluate, metrics
    from qcamo_jax.attacks import api
    from qcamo_jax.attacks.config import PGDConfig, SearchConfig
    from qcamo_jax.jpeg.reencoders import ReencoderSet
    from qcamo_jax.models.hub import load_model
    from qcamo_jax.quantize import dct as qdct

    survive = ReencoderSet.parse(args.survive)
    model = load_model(args.model)
    originals = np.stack([load(ROOT / p, args.size) for p in args.photos])
    score = evaluate.make_scorer(model, batch_size=len(originals))
    clean = score(list(originals))
    targets = np.minimum(args.target, clean - args.drop).astype(np.float32)
    print(f"clean {np.round(clean, 1).tolist()} targets {np.round(targets, 1).tolist()}", file=sys.stderr)
    search = SearchConfig.thorough(pgd=PGDConfig(steps=10, margin=args.attack_margin), bisection_steps=5)
    attack_score = model.score_one
    if args.attack_survive:
        from qcamo_jax.quantize import survival

        attack_score = survival.survival_score_fn(model.score_one, survive, "444", "mean")
    attack = jax.jit(api.attack_fn(attack_score, "search", search))
    keys = jax.random.split(jax.random.PRNGKey(0), len(originals))
    t0 = time.perf_counter()
    adv, _ = attack(model.variables, jnp.asarray(originals, jnp.float32), jnp.asarray(targets), keys)
    adv = np.asarray(jax.block_until_ready(adv))
    print(f"attack {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="qcamo_wq_"))
    out = {"command": "python scripts/written_quality.py " + " ".join(sys.argv[1:]), "size": args.size,
           "photos": args.photos, "survive": survive.spec, "attack_survive": args.attack_survive, "targets": targets.tolist(), "clean": clean.tolist(),
           "options": {}}
    for name in args.options:
        cfg = qdct.DCTConfig(margin=args.margin, survive=survive, **OPTIONS[name])
        t0 = time.perf_counter()
        coeffs, decoded, res = jax.jit(lambda v, o, a, t: qdct.quantize_dct(model.score_one, v, o, a, t, cfg))(
            model.variables, originals, adv, targets)
        coeffs = jax.tree.map(np.asarray, jax.block_until_ready(coeffs))
        seconds = time.perf_counter() - t0
        paths = []
        for i in range(len(originals)):
            paths.append(work / f"{name}_{i}.jpg")
            qdct.write_jpeg(paths[i], qdct.unbatch(coeffs, i))
        real = evaluate.score_survival(paths, survive, score, targets)
        psnr = np.asarray(metrics.psnr(np.asarray(decoded), originals))
        # Does sampling a quality range every 5 cover the qualities in between? Pillow 4:2:0 at each Q.
        between = evaluate.score_survival(paths, ReencoderSet.parse(args.between), score, targets)
        row = {
            "success_real": float(np.mean([r.success for r in real])),
            "success_emulated": float(np.mean(np.asarray(res.success))),
            "per_member": {m: float(np.mean([r.scores[m] < t for r, t in zip(real, targets)])) for m in survive.names},
            "between": {m: float(np.mean([r.scores[m] < t for r, t in zip(between, targets)]))
                        for m in ReencoderSet.parse(args.between).names},
            "as_saved": float(np.mean([r.score_saved < t for r, t in zip(real, targets)])),
            "mean_psnr": float(np.mean(psnr)),
            "psnr": psnr.round(2).tolist(),
            "worst_minus_T": [round(float(r.worst - t), 2) for r, t in zip(real, targets)],
            "seconds_incl_compile": round(seconds, 1),
        }
        out["options"][name] = row
        print(name, json.dumps(row, default=float), file=sys.stderr)
    text = json.dumps(out, indent=1, default=float)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
