"""Held-out evaluation of a quality model on distorted versions of photos never seen in training.

``python -m qcamo_jax.training.evaluate_default --model default`` prints JSON with, over the held-out
source pictures (:func:`qcamo_jax.training.sources.all_sources`, split ``heldout``; full-frame
384x512 view of each) and the levels of :data:`qcamo_jax.training.distortions.EVAL_LEVELS`:

  * ``pair_accuracy``: fraction of (pristine, distorted) pairs where the pristine image scores higher,
    overall and per family (blur, noise, JPEG quality 30/20/10);
  * ``mean_spearman``: Spearman correlation between distortion rank (0 = pristine, 1.. = levels) and
    score, per (picture, family), averaged (monotone fall = -1);
  * ``pristine_above_50`` / ``pristine_above_30``: fraction of pristine pictures scoring above the
    attack targets T = 50 and T = 30; and every score.

The criteria of issue 5 are ``pair_accuracy >= 0.9``, ``mean_spearman <= -0.8`` and most pristine
pictures above 50.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from qcamo_jax.training import distortions, sources


#: The Debian held-out views, committed as lossless 384x512 PNGs so that tests need no download
#: (provenance and licences in that folder's README.md).
HELDOUT_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "heldout"


def heldout_images(cache: str | Path | None = None, names=None, fallback_dir: Path | None = HELDOUT_DIR) -> dict[str, np.ndarray]:
    """Full-frame 384x512 views of the held-out sources: ``{name: uint8 [384, 512, 3]}``.

    scikit-image sources are always available; a Debian one is cut from ``cache`` when it holds the
    unpacked package (:func:`qcamo_jax.training.sources.fetch_debian`), else read from
    ``fallback_dir/<origin>_<name>.png`` (the same pixels), else skipped.
    """
    from PIL import Image

    out = {}
    for src in sources.all_sources():
        if src.split != "heldout" or (names is not None and src.name not in names):
            continue
        if src.origin != "skimage" and (cache is None or not (Path(cache) / "debian" / src.origin / src.locator).is_file()):
            png = None if fallback_dir is None else Path(fallback_dir) / (src.name.replace(":", "_") + ".png")
            if png is not None and png.is_file():
                with Image.open(png) as im:
                    out[src.name] = np.asarray(im.convert("RGB"), dtype=np.uint8)
            continue
        out[src.name] = sources.cover_crop(sources.load_source(src, cache))
    return out


def distorted_set(image: np.ndarray, levels=distortions.EVAL_LEVELS, seed: int = 0):
    """``[(family, rank, level, uint8 image)]`` with the pristine image first (family ``pristine``)."""
    out = [("pristine", 0, 0.0, image)]
    for fi, (family, values) in enumerate(levels.items()):
        for li, level in enumerate(values):
            rng = np.random.default_rng([seed, fi, li])
            out.append((family, li + 1, float(level), distortions.apply(image, family, level, rng)))
    return out


def score_images(model, images: np.ndarray, batch: int = 8) -> np.ndarray:
    """Scores of ``uint8 [N, H, W, 3]`` images with a :class:`~qcamo_jax.models.hub.QualityModel`."""
    import jax
    import jax.numpy as jnp

    fn = jax.jit(lambda v, x: model.apply(v, x))
    out = []
    for i in range(0, len(images), batch):
        chunk = images[i : i + batch]
        pad = batch - len(chunk)
        x = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)]) if pad else chunk
        out.append(np.asarray(fn(model.variables, jnp.asarray(x, jnp.float32)))[: len(chunk)])
    return np.concatenate(out)


def evaluate(model, images: dict[str, np.ndarray], levels=distortions.EVAL_LEVELS, batch: int = 8) -> dict:
    """Score pristine and distorted versions of ``images``; see the module docstring for the metrics."""
    from scipy.stats import spearmanr

    per_image = {}
    pairs = {f: [] for f in levels}
    spearman = {f: [] for f in levels}
    for name, image in images.items():
        entries = distorted_set(image, levels)
        scores = score_images(model, np.stack([e[3] for e in entries]), batch)
        pristine = float(scores[0])
        rec = {"pristine": round(pristine, 2)}
        for family in levels:
            idx = [i for i, e in enumerate(entries) if e[0] == family]
            fam_scores = scores[idx]
            pairs[family] += [bool(pristine > s) for s in fam_scores]
            ranks = [0] + [entries[i][1] for i in idx]
            rho = spearmanr(ranks, [pristine] + list(fam_scores)).statistic
            spearman[family].append(float(rho))
            rec[family] = {f"{entries[i][2]:g}": round(float(s), 2) for i, s in zip(idx, fam_scores)}
        per_image[name] = rec
    all_pairs = [p for v in pairs.values() for p in v]
    all_rho = [r for v in spearman.values() for r in v]
    pristine = np.array([r["pristine"] for r in per_image.values()])
    summary = {
        "n_images": len(images),
        "pair_accuracy": round(float(np.mean(all_pairs)), 4),
        "pair_accuracy_by_family": {f: round(float(np.mean(v)), 4) for f, v in pairs.items()},
        "mean_spearman": round(float(np.mean(all_rho)), 4),
        "mean_spearman_by_family": {f: round(float(np.mean(v)), 4) for f, v in spearman.items()},
        "pristine_mean": round(float(pristine.mean()), 2),
        "pristine_above_50": round(float(np.mean(pristine > 50)), 4),
        "pristine_above_30": round(float(np.mean(pristine > 30)), 4),
    }
    return {"summary": summary, "per_image": per_image, "levels": {k: list(v) for k, v in levels.items()}}


def main(argv=None) -> int:
    from qcamo_jax.models.hub import load_model
    from qcamo_jax.training.data import DEFAULT_CACHE

    p = argparse.ArgumentParser(description="Evaluate a quality model on held-out distorted photos.")
    p.add_argument("--model", default="default", help="model name or checkpoint path")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="data cache holding the Debian packages")
    p.add_argument("--skimage-only", action="store_true", help="only the scikit-image held-out photos")
    args = p.parse_args(argv)
    model = load_model(args.model)
    images = heldout_images(None if args.skimage_only else args.cache)
    print(json.dumps(evaluate(model, images), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
