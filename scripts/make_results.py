"""Reproduce the paper's tables on sample photos and write docs/results.md (and docs/results.json).

For each target T and each method - PGD + spatial quantizer (PNG), PGD + DCT quantizer (JPEG), and the
JPEG-aware attack (PGD through the differentiable JPEG of qcamo_jax.jpeg.diff, then the DCT quantizer)
- it attacks the photos in one batch, writes the files, and evaluates them with
:mod:`qcamo_jax.evaluate`: P_png (score of the file as saved), P_jpg after each real encoder at quality
90, mean PSNR / SSIM / L2, and for JPEG outputs the share of coefficients ImageMagick keeps.

Usage (the command recorded in docs/results.md)::

    python scripts/make_results.py --model default --targets 30 50
    # random or tiny models: targets relative to each photo's own score
    python scripts/make_results.py --model tiny-random --relative --targets 1 3
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/photos.py: scikit-image's bundled photos

METHODS = ("plain-jpeg", "spatial", "dct", "jpeg-aware")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--photos", nargs="+", default=["astronaut", "chelsea", "coffee", "rocket"])
    p.add_argument("--targets", nargs="+", type=float, default=[30.0, 50.0])
    p.add_argument("--relative", action="store_true", help="T = score(original) - target, per photo")
    p.add_argument("--steps", type=int, default=10, help="PGD steps per budget try")
    p.add_argument("--search-steps", type=int, default=7, help="budget bisection tries")
    p.add_argument("--margin", type=float, default=0.0, help="attack and DCT-quantizer safety margin")
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--candidates", default="gradient", choices=("gradient", "bracket"), help="DCT quantizer candidates")
    p.add_argument("--max-steps", type=int, default=1, help="DCT quantizer: largest change of a coefficient (steps)")
    p.add_argument("--work", default=None, help="folder for the attacked files (default: a temporary folder)")
    p.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    return p.parse_args(argv)


def imagemagick_kept(jpg: Path, quality: int) -> float | None:
    """Share of the coefficients of ``jpg`` that ImageMagick ``-quality Q`` re-encoding keeps."""
    import jpeglib

    from qcamo_jax.jpeg import encoders

    if not encoders.available("imagemagick"):
        return None
    enc = encoders.encode_file("imagemagick", jpg, quality)
    src = jpeglib.read_dct(str(jpg))
    if enc.coefficients is None:
        return None
    kept = sum(int((np.asarray(a) == b).sum()) for a, b in zip(enc.coefficients.components, (src.Y, src.Cb, src.Cr)))
    return kept / sum(b.size for b in (src.Y, src.Cb, src.Cr))


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax
    import jax.numpy as jnp
    from PIL import Image

    import photos
    from qcamo_jax import evaluate
    from qcamo_jax.attacks import api
    from qcamo_jax.attacks.config import PGDConfig, SearchConfig
    from qcamo_jax.fileio import atomic_write, atomic_write_bytes
    from qcamo_jax.jpeg import codec
    from qcamo_jax.jpeg import io as jio
    from qcamo_jax.models.hub import load_model
    from qcamo_jax.quantize import dct as qdct
    from qcamo_jax.quantize import spatial
    from qcamo_jax.quantize.jpeg_aware import jpeg_aware_attack

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="qcamo_results_"))
    model = load_model(args.model)
    size = tuple(model.input_size)
    originals = photos.photos(size, names=tuple(args.photos))
    odir = work / "originals"
    odir.mkdir(parents=True, exist_ok=True)
    for n, im in zip(args.photos, originals):
        Image.fromarray(im).save(odir / f"{n}.png")
    score = evaluate.make_scorer(model, batch_size=len(originals))
    clean = score(list(originals))
    print(f"model {model.name}, {len(originals)} photos {size[1]}x{size[0]}, clean scores {np.round(clean, 1).tolist()}",
          file=sys.stderr)

    search = SearchConfig(pgd=PGDConfig(steps=args.steps, margin=args.margin), bisection_steps=args.search_steps)
    attack_plain = jax.jit(api.attack_fn(model.score_one, "search", search))
    dcfg = qdct.DCTConfig.for_imagemagick(args.quality, margin=args.margin, candidates=args.candidates,
                                          max_steps=args.max_steps)
    scfg = spatial.SpatialConfig(margin=args.margin)
    q_spatial = jax.jit(lambda v, o, a, t: spatial.quantize_spatial(model.score_one, v, o, a, t, scfg))
    q_dct = jax.jit(lambda v, o, a, t: qdct.quantize_dct(model.score_one, v, o, a, t, dcfg))
    jpeg_aware = jax.jit(lambda v, o, t, k: jpeg_aware_attack(model.score_one, v, o, t, k, search, dcfg)[0])
    reenc = evaluate.reencoders(args.quality)
    keys = jax.random.split(jax.random.PRNGKey(0), len(originals))
    x = jnp.asarray(originals, jnp.float32)

    results = []
    for t in args.targets:
        targets = (clean - t if args.relative else np.full(len(originals), t)).astype(np.float32)
        timings = {}
        t0 = time.perf_counter()
        adv_plain, _ = attack_plain(model.variables, x, targets, keys)
        adv_plain = jax.block_until_ready(adv_plain)
        timings["attack"] = time.perf_counter() - t0
        for method in METHODS:
            d = work / f"T{t:g}" / method
            d.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            if method == "spatial":
                px, _ = q_spatial(model.variables, originals, adv_plain, targets)
                px = np.asarray(jax.block_until_ready(px))
                for n, im in zip(args.photos, px):
                    with atomic_write(d / f"{n}.png") as f:
                        Image.fromarray(im).save(f, format="PNG")
            elif method == "plain-jpeg":  # reference: the original as the target encoder writes it, no attack
                enc = jax.jit(jax.vmap(lambda o: codec.encode(o, args.quality, dct_method=dcfg.dct_method)))
                coeffs = jax.tree.map(np.asarray, enc(originals))
                for i, n in enumerate(args.photos):
                    atomic_write_bytes(d / f"{n}.jpg", jio.jpeg_bytes(qdct.unbatch(coeffs, i)))
            else:
                if method == "dct":
                    coeffs, _, _ = q_dct(model.variables, originals, adv_plain, targets)
                else:  # attack and quantizer in one program
                    coeffs = jpeg_aware(model.variables, originals, targets, keys)
                coeffs = jax.tree.map(np.asarray, jax.block_until_ready(coeffs))
                for i, n in enumerate(args.photos):
                    atomic_write_bytes(d / f"{n}.jpg", jio.jpeg_bytes(qdct.unbatch(coeffs, i)))
            timings[f"quantize-{method}"] = time.perf_counter() - t0
            files, origs, _ = evaluate.match_originals(evaluate.list_images(d), odir)
            rows = evaluate.evaluate_files(files, origs, score, reenc, target=None if args.relative else t,
                                           relative=t if args.relative else None)
            summ = evaluate.summarize(rows)
            kept = [imagemagick_kept(f, args.quality) for f in files if f.suffix == ".jpg"]
            kept = [k for k in kept if k is not None]
            summ["imagemagick_kept"] = float(np.mean(kept)) if kept else None
            results.append({"target": t, "method": method, "summary": summ, "seconds": timings,
                            "files": [r._asdict() for r in rows]})
            print(f"T={t:g} {method}: P_png {summ['P_png']:.2f} P_jpg {summ['P_jpg']} PSNR {summ['mean_psnr']:.2f}",
                  file=sys.stderr)

    command = "python scripts/make_results.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    md = render(args, model, size, clean, results, list(reenc), command)
    out = Path(args.out)
    with atomic_write(out, "w") as f:
        f.write(md)
    with atomic_write(out.with_suffix(".json"), "w") as f:
        json.dump({"command": command, "model": model.name, "clean": clean.tolist(), "results": results}, f, indent=2,
                  default=lambda v: None)
    print(f"wrote {out} (work files in {work})", file=sys.stderr)
    return 0


SHORT = {
    "imagemagick": "IM", "pillow-444": "PIL444", "pillow-420": "PIL420",
    "libjpeg6b-islow-444": "6b-s", "libjpeg6b-ifast-444": "6b-f", "libjpeg9f-islow-444": "9f-s",
    "libjpeg9f-ifast-444": "9f-f", "libjpegturbo210-islow-444": "turbo-s", "libjpegturbo210-ifast-444": "turbo-f",
}


def render(args, model, size, clean, results, encoders, command) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.0f}"
    lines = [
        "# Results: does the attack survive saving and JPEG?",
        "",
        "Generated by `scripts/make_results.py`; do not edit by hand. Command:",
        "",
        f"    {command}",
        "",
        f"Model: `{model.name}` (`--model {args.model}`). Photos: {', '.join(args.photos)} (scikit-image), "
        f"resized and centre-cropped to {size[1]}x{size[0]}; clean scores "
        f"{', '.join(f'{c:.1f}' for c in clean)}.",
        f"Attack: L2 PGD, {args.steps} steps per try, {args.search_steps} budget-bisection tries "
        f"(the paper: 7), margin {args.margin:g}. Targets: "
        + ("T = own score - " if args.relative else "T = ") + ", ".join(f"{t:g}" for t in args.targets) + ".",
        "",
        "Methods: **plain-jpeg** = the original written by the target encoder, no attack (the distortion JPEG "
        "alone costs); **spatial** = PGD then the spatial quantizer (PNG); **dct** = PGD then the DCT-domain "
        "quantizer (JPEG holding the chosen coefficients, Q = %d, IFAST like ImageMagick); **jpeg-aware** = PGD "
        "through the differentiable JPEG, then the DCT quantizer (candidates `%s`, max_steps %d)." % (
            args.quality, args.candidates, args.max_steps),
        "",
        "P_png: share of files scored below T as saved. P_jpg: share still below T after re-encoding the file at "
        f"quality {args.quality} by each encoder ({', '.join(f'{SHORT.get(e, e)} = `{e}`' for e in encoders)}); "
        "`-s`/`-f` = islow/ifast DCT, all 4:4:4 except PIL420. IM kept: share of the DCT coefficients that an "
        "ImageMagick re-encoding leaves unchanged.",
        "",
    ]
    head = ["T", "method", "P_png"] + [f"P_jpg {SHORT.get(e, e)}" for e in encoders] + ["PSNR dB", "SSIM", "L2", "IM kept %"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in results:
        s = r["summary"]
        cells = [f"{r['target']:g}", r["method"], pct(s["P_png"])] + [pct(s["P_jpg"].get(e)) for e in encoders]
        cells += [f"{s['mean_psnr']:.2f}", f"{s['mean_ssim']:.4f}", f"{s['mean_l2']:.0f}",
                  "-" if s.get("imagemagick_kept") is None else f"{100 * s['imagemagick_kept']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Per photo: score as saved / after ImageMagick (or the first encoder) q%d, target, PSNR." % args.quality, ""]
    first = encoders[0] if encoders else None
    lines.append("| T | method | " + " | ".join(args.photos) + " |")
    lines.append("|" + "---|" * (2 + len(args.photos)))
    for r in results:
        cells = [f"{r['target']:g}", r["method"]]
        for f in r["files"]:
            j = f["jpg"].get(first, float("nan")) if first else float("nan")
            cells.append(f"{f['score_png']:.1f} / {j:.1f} (T {f['target']:.1f}, {f['psnr']:.1f} dB)")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Wall time per batch (seconds, this machine, compilation included):", ""]
    for r in results:
        if r["method"] == "spatial":
            lines.append(f"- T = {r['target']:g}: " + ", ".join(f"{k} {v:.1f}" for k, v in r["seconds"].items()))
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
