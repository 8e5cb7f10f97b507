"""Train the embedded default quality model (``qcamo-small``) and write ``weights/default.safetensors``.

One command, deterministic given ``--seed`` (same data, same batches, same initialisation; XLA on
CPU is deterministic for these ops)::

    python -m qcamo_jax.training.train_default --out weights/default.safetensors

It (1) prepares the training set with :mod:`qcamo_jax.training.data` (Debian wallpaper packages via
``apt-get download``, scikit-image photos, synthetic distortions, SSIM-calibrated labels) in
``.cache/qcamo_train`` unless it is there already, (2) trains on random crops, and (3) evaluates the
result on the held-out source photos (:mod:`qcamo_jax.training.evaluate_default`) and stores that
summary in the checkpoint metadata.

Training objective, in units of the head's output ``(score - 50) / 20``: mean squared error to the
label plus a pairwise hinge ranking loss between versions of the SAME crop (pristine and distorted
versions share a crop in every group), which directly asks for what the model is judged on: a
distorted image scores lower than its pristine version, and stronger distortion scores lower still.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

#: Defaults of the shipped model (recorded in the checkpoint metadata).
DEFAULTS = dict(seed=0, steps=1400, groups=6, per_group=4, crop=(128, 160), lr=1e-3, conv_lr_factor=0.3, warmup=100,
                rank_weight=1.0)


def sample_batch(images, labels, rng: np.random.Generator, groups: int, per_group: int, crop):
    """``groups`` random views x ``per_group`` versions of one shared random crop (index 0 pristine).

    Returns:
      pixels ``uint8 [groups * per_group, ch, cw, 3]`` and labels ``float32 [groups * per_group]``.
    """
    n_views, n_versions, H, W, _ = images.shape
    ch, cw = crop
    xs, ys = [], []
    for _ in range(groups):
        v = int(rng.integers(n_views))
        versions = np.concatenate([[0], 1 + rng.choice(n_versions - 1, per_group - 1, replace=False)])
        # Offsets on the 8x8 grid keep JPEG block boundaries where they are in a full image.
        top, left = 8 * int(rng.integers(0, (H - ch) // 8 + 1)), 8 * int(rng.integers(0, (W - cw) // 8 + 1))
        flip = bool(rng.integers(2))
        for d in versions:
            x = np.asarray(images[v, d, top : top + ch, left : left + cw])
            xs.append(x[:, ::-1] if flip else x)
            ys.append(labels[v, d])
    return np.stack(xs), np.asarray(ys, np.float32)


def make_train_step(module, optimizer, groups: int, per_group: int, rank_weight: float):
    import jax
    import jax.numpy as jnp
    import optax

    from qcamo_jax.models.small import SCORE_MEAN, SCORE_SCALE

    def loss_fn(params, pixels, targets):
        pred = (module.apply({"params": params}, pixels) - SCORE_MEAN) / SCORE_SCALE
        y = (targets - SCORE_MEAN) / SCORE_SCALE
        mse = jnp.mean((pred - y) ** 2)
        p = pred.reshape(groups, per_group)
        t = y.reshape(groups, per_group)
        dp = p[:, :, None] - p[:, None, :]
        dt = t[:, :, None] - t[:, None, :]
        valid = dt > 0.05  # pairs whose labels differ by more than 1 point: i should beat j
        hinge = jnp.maximum(0.0, 0.5 * jnp.minimum(dt, 1.0) - dp)
        rank = jnp.sum(jnp.where(valid, hinge, 0.0)) / jnp.maximum(1.0, jnp.sum(valid))
        return mse + rank_weight * rank, (mse, rank)

    @jax.jit
    def step(params, opt_state, pixels, targets):
        (loss, (mse, rank)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, pixels, targets)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, mse, rank

    return step


def train(dataset: Path, out: Path, seed: int, steps: int, groups: int, per_group: int, crop, lr: float,
          conv_lr_factor: float, warmup: int, rank_weight: float, cache: Path, log=print) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    from qcamo_jax.models import checkpoint, small
    from qcamo_jax.training import data, evaluate_default

    images = np.load(dataset / "images.npy", mmap_mode="r")
    labels, calibration = data.labels_for(dataset)
    meta = json.loads((dataset / "meta.json").read_text())
    config = {"widths": [24, 32, 64, 96, 128], "head": [256, 64], "input_size": [384, 512]}
    module = small.build(**config)
    params = module.init(jax.random.PRNGKey(seed), jnp.zeros((1, *crop, 3), jnp.float32))["params"]
    rng = np.random.default_rng([seed, 7])
    init_pixels, _ = sample_batch(images, labels, rng, 16, 4, crop)
    params = small.standardise_from_data(module, params, jnp.asarray(init_pixels, jnp.float32))
    warmup = min(warmup, steps // 2)
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, steps, end_value=lr * 0.01)
    # Convolutions learn at a lower rate than the head: the head reads standardised pooled statistics
    # whose meaning drifts when the convolutions move fast.
    groups_of = {k: ("conv" if k.startswith("conv") else "head") for k in params}
    optimizer = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.multi_transform(
            {"conv": optax.adamw(lambda i: conv_lr_factor * schedule(i), weight_decay=1e-4),
             "head": optax.adamw(schedule, weight_decay=1e-4)},
            groups_of,
        ),
    )
    opt_state = optimizer.init(params)
    step = make_train_step(module, optimizer, groups, per_group, rank_weight)
    t0 = time.time()
    history = []
    for i in range(steps):
        pixels, targets = sample_batch(images, labels, rng, groups, per_group, crop)
        params, opt_state, loss, mse, rank = step(params, opt_state, jnp.asarray(pixels, jnp.float32), jnp.asarray(targets))
        if (i + 1) % 50 == 0 or i == 0:
            rec = {"step": i + 1, "loss": float(loss), "mse": float(mse), "rank": float(rank), "time_s": round(time.time() - t0, 1)}
            history.append(rec)
            log(json.dumps(rec))
    train_time = time.time() - t0
    variables = {"params": jax.device_get(params)}
    from qcamo_jax.models.hub import from_variables

    model = from_variables("qcamo-small", config, variables, {"name": "default"})
    results = evaluate_default.evaluate(model, evaluate_default.heldout_images(cache))
    log(json.dumps(results["summary"]))
    metadata = {
        "architecture": "qcamo-small",
        "config": json.dumps(config, sort_keys=True),
        "name": "default",
        "description": "qcamo-small: compact no-reference quality model trained in qcamo_jax (NOT KonCept512)",
        "training_command": "python -m qcamo_jax.training.train_default --out " + str(out) + f" --seed {seed}",
        "training": json.dumps({"seed": seed, "steps": steps, "groups": groups, "per_group": per_group,
                                "crop": list(crop), "lr": lr, "conv_lr_factor": conv_lr_factor, "warmup": warmup, "rank_weight": rank_weight,
                                "train_time_s": round(train_time, 1), "n_views": int(images.shape[0]),
                                "n_versions": int(images.shape[1]), "debian_packages": meta["debian_packages"],
                                "labels": calibration}),
        "heldout_summary": json.dumps(results["summary"]),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save(out, variables, metadata)
    log(f"wrote {out} after {train_time:.0f} s of training")
    return {"history": history, "results": results, "train_time_s": train_time}


def main(argv=None) -> int:
    from qcamo_jax.training import data

    p = argparse.ArgumentParser(description="Train the embedded default quality model (qcamo-small).")
    p.add_argument("--out", default="weights/default.safetensors", help="checkpoint to write")
    p.add_argument("--cache", default=str(data.DEFAULT_CACHE), help="data cache (Debian packages, dataset)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    p.add_argument("--groups", type=int, default=DEFAULTS["groups"], help="views per batch")
    p.add_argument("--per-group", type=int, default=DEFAULTS["per_group"], help="versions of each view per batch")
    p.add_argument("--crop", type=int, nargs=2, default=DEFAULTS["crop"], metavar=("H", "W"))
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--conv-lr-factor", type=float, default=DEFAULTS["conv_lr_factor"])
    p.add_argument("--warmup", type=int, default=DEFAULTS["warmup"])
    p.add_argument("--rank-weight", type=float, default=DEFAULTS["rank_weight"])
    p.add_argument("--log", help="also write the training log (JSON lines) here")
    args = p.parse_args(argv)
    lines = []

    def log(msg):
        print(msg, flush=True)
        lines.append(msg)

    dataset = data.prepare(args.cache, args.seed, log=log)
    train(dataset, Path(args.out), args.seed, args.steps, args.groups, args.per_group, tuple(args.crop), args.lr,
          args.conv_lr_factor, args.warmup, args.rank_weight, Path(args.cache), log=log)
    if args.log:
        from qcamo_jax.fileio import atomic_write

        with atomic_write(args.log, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
