"""Build the default model's training set: views x distortions, with SSIM-calibrated labels.

``python -m qcamo_jax.training.data --cache .cache/qcamo_train`` (also run by ``train_default``)
fetches the Debian packages, cuts every TRAINING source picture into 384x512 views, applies every
distortion of :data:`qcamo_jax.training.distortions.TRAIN_LEVELS` and stores

  * ``images.npy``: ``uint8 [V, D, 384, 512, 3]`` (memory-mapped; ~1.5 GB, never committed);
  * ``ssim.npy``: ``float32 [V, D]`` SSIM of each version to its pristine view (index 0 of D);
  * ``meta.json``: sources, views, distortion catalogue, seed, Debian package files.

Labels are derived from ``ssim.npy`` by :func:`labels_for` (so a change of the label map needs no
new images).

Everything depends only on ``seed`` (views, noise), so the same seed gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

from qcamo_jax.training import distortions, labels, sources

DEFAULT_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "qcamo_train"
N_ZOOM = 2  # zoomed views per large source picture, besides the full frame


def _distort_view(args) -> tuple[np.ndarray, np.ndarray]:
    view, seed, view_index = args
    cat = distortions.catalogue()
    out = np.empty((len(cat),) + view.shape, np.uint8)
    ssim = np.empty(len(cat), np.float32)
    for d, (family, level, _) in enumerate(cat):
        rng = np.random.default_rng([seed, view_index, d])
        out[d] = view if family == "pristine" else distortions.apply(view, family, level, rng)
        ssim[d] = 1.0 if family == "pristine" else labels.ssim_rgb(view, out[d])
    return out, ssim


def prepare(cache: str | os.PathLike = DEFAULT_CACHE, seed: int = 0, workers: int = 2, log=print) -> Path:
    """Build (or reuse) the training set under ``cache/dataset_seed{seed}``; returns that folder."""
    cache = Path(cache)
    folder = cache / f"dataset_seed{seed}"
    if (folder / "meta.json").is_file():
        log(f"reusing {folder}")
        return folder
    t0 = time.time()
    debs = sources.fetch_debian(cache)
    train = [s for s in sources.all_sources() if s.split == "train"]
    all_views, view_meta = [], []
    for si, src in enumerate(train):
        rng = np.random.default_rng([seed, 1000 + si])
        for vi, v in enumerate(sources.views(sources.load_source(src, cache), N_ZOOM, rng)):
            all_views.append(v)
            view_meta.append({"source": src.name, "view": vi})
    cat = distortions.catalogue()
    log(f"{len(train)} training sources -> {len(all_views)} views x {len(cat)} versions")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "images.npy.tmp"
    images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(all_views), len(cat)) + all_views[0].shape)
    ssim = np.empty((len(all_views), len(cat)), np.float32)
    jobs = [(v, seed, i) for i, v in enumerate(all_views)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        for i, (imgs, s) in enumerate(pool.imap(_distort_view, jobs)):
            images[i] = imgs
            ssim[i] = s
            if (i + 1) % 10 == 0:
                log(f"  {i + 1}/{len(jobs)} views distorted ({time.time() - t0:.0f} s)")
    images.flush()
    del images
    os.replace(tmp, folder / "images.npy")
    np.save(folder / "ssim.npy", ssim)
    meta = {
        "seed": seed,
        "debian_packages": debs,
        "sources": [s.__dict__ for s in train],
        "views": view_meta,
        "catalogue": [list(c) for c in cat],
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    log(f"dataset ready in {time.time() - t0:.0f} s: {folder}")
    return folder


def labels_for(folder: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """``(labels float32 [V, D], calibration)`` of a prepared dataset (see :mod:`labels`)."""
    folder = Path(folder)
    ssim = np.load(folder / "ssim.npy")
    cat = json.loads((folder / "meta.json").read_text())["catalogue"]
    ref = labels.calibrate(ssim, cat)
    calibration = {"ssim_ref": ref, "strongest_mos": labels.STRONGEST_MOS, "mos_pristine": labels.MOS_PRISTINE,
                   "mos_floor": labels.MOS_FLOOR, "content_weight": labels.CONTENT_WEIGHT}
    return labels.label_table(ssim, cat, ref), calibration


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    prepare(args.cache, args.seed, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
