"""Speed of the full attack (L2 PGD inside the per-image budget bisection): JAX vs PyTorch eager.

Both sides attack the *same* model with the *same* weights: the MediaEval KonCept512 built in PyTorch
(:mod:`qcamo_jax.testing.torch_koncept`, random weights, batch norms calibrated on real photos so the
scores look like MOS), converted to Flax with the project's converter
(:mod:`qcamo_jax.models.convert_torch`). Both run the same algorithm: per image, ``tries`` bisection
tries over the L2 budget in (0, eps_max], each ``steps`` PGD steps of constant size ``2.5 * eps / steps``
along the L2-normalised gradient from the original image, projection on the ball and the pixel box,
``hi <- reached distortion`` on success (the JAX side runs with ``schedule="constant"``,
``warm_start=False``, ``refine_steps=0`` to match). Early stop is off on both sides so both do exactly ``batch * tries * steps`` gradient
evaluations (plus ``batch * (tries + 1)`` forward passes) and the rates compare like for like.

JAX: one ``jax.jit`` of :func:`qcamo_jax.attacks.budget_search` (``lax`` loops, ``vmap`` over images);
compilation is timed separately and excluded from the rate. PyTorch: eager, batched, ``autograd.grad``
per step, one warm-up gradient before timing. Same process, same CPU threads, one after the other.

Usage:
  python benchmarks/attack_pgd.py                      # 2 images 299x299, 2 tries x 4 steps (< 3 min)
  python benchmarks/attack_pgd.py --size 384x512 --batch 2 --steps 10 --tries 7 --out bench.json

Prints one JSON object (and writes it atomically to ``--out`` if given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np


def parse_size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def photos(size: tuple[int, int], n: int) -> np.ndarray:
    """``uint8 [n, H, W, 3]``: crops of scikit-image's bundled photos (offline)."""
    import skimage.data
    from PIL import Image

    names = ("astronaut", "chelsea", "coffee", "rocket")
    out = []
    for i in range(n):
        im = Image.fromarray(getattr(skimage.data, names[i % len(names)])()[..., :3])
        scale = max(size[0] / im.height, size[1] / im.width) * (1.0 + 0.15 * (i // len(names)))
        im = im.resize((max(size[1], round(im.width * scale)), max(size[0], round(im.height * scale))), Image.BICUBIC)
        top, left = (im.height - size[0]) // 2, (im.width - size[1]) // 2
        out.append(np.asarray(im.crop((left, top, left + size[1], top + size[0])), np.uint8))
    return np.stack(out)


def build_models(calib: np.ndarray, seed: int, inference: bool = True):
    """The PyTorch MediaEval KonCept512 and the same weights as a Flax :class:`QualityModel`.

    The Flax model is in the form ``hub.load_model`` gives (its inference form: batch norms folded into
    the convolutions, ``qcamo_jax.models.inference_form``) unless ``inference=False``; the PyTorch
    model is the eager ``eval()`` module a PyTorch user runs, batch norms apart.
    """
    import torch

    from qcamo_jax.models import convert, hub
    from qcamo_jax.testing import torch_koncept

    torch.manual_seed(seed)
    tmodel = torch_koncept.calibrate(torch_koncept.build_torch_koncept(), calib, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "koncept512-random.pth")
        torch.save(tmodel.state_dict(), path)
        variant, variables = convert.convert_variables(path)
    jmodel = hub.from_variables("koncept512", {"variant": variant, "size": "full"}, variables)
    return tmodel, hub.inference_form(jmodel) if inference else jmodel


def torch_search(tmodel, x0: np.ndarray, targets: np.ndarray, eps_max: float, tries: int, steps: int,
                 step_scale: float = 2.5):
    """Batched eager PyTorch mirror of :func:`qcamo_jax.attacks.budget_search` (no early stop).

    Returns:
      ``(adversarial [B, H, W, 3] pixels, budget [B], success [B], gradient evaluations)``.
    """
    import torch

    x0 = torch.as_tensor(x0, dtype=torch.float32)
    t = torch.as_tensor(targets, dtype=torch.float32)
    batch = x0.shape[0]

    def loss(x):  # NHWC pixels -> Q(x) - T, [B]
        return tmodel(x.permute(0, 3, 1, 2) / 127.5 - 1.0)[:, 0] - t

    def per_image(v):
        return v[:, None, None, None]

    with torch.no_grad():
        best_loss = loss(x0)
    lo, hi = torch.zeros(batch), torch.full((batch,), float(eps_max))
    found = torch.zeros(batch, dtype=torch.bool)
    best_x, best_dist, best_budget = x0.clone(), torch.full((batch,), float("inf")), torch.zeros(batch)
    grads = 0
    for _ in range(tries):
        eps = 0.5 * (lo + hi)
        alpha = step_scale * eps / steps
        x = x0.clone()
        for _ in range(steps):
            x.requires_grad_(True)
            (g,) = torch.autograd.grad(loss(x).sum(), x)
            grads += batch
            gn = g.flatten(1).norm(dim=1)
            d = g * per_image(torch.where(gn > 1e-20, 1.0 / gn.clamp_min(1e-20), torch.zeros_like(gn)))
            with torch.no_grad():
                delta = x - per_image(alpha) * d - x0
                n = delta.flatten(1).norm(dim=1)
                factor = torch.where(n > eps, eps / torch.where(n > 0, n, torch.ones_like(n)), torch.ones_like(n))
                x = (x0 + delta * per_image(factor)).clamp(0.0, 255.0)
        with torch.no_grad():
            l_end = loss(x)
        success = l_end < 0
        dist = (x - x0).flatten(1).norm(dim=1)
        keep = torch.where(found, success & (dist < best_dist), success | (l_end < best_loss))
        best_x = torch.where(per_image(keep), x, best_x)
        best_loss = torch.where(keep, l_end, best_loss)
        best_dist = torch.where(keep, dist, best_dist)
        best_budget = torch.where(keep, eps, best_budget)
        found = found | success
        lo = torch.where(success, torch.minimum(lo, dist), eps)
        hi = torch.where(success, dist, hi)
    return best_x.numpy(), best_budget.numpy(), (best_loss < 0).numpy(), grads


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=parse_size, default=(299, 299), help="HxW (MediaEval variant: >= 299x299)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=4, help="PGD steps per bisection try")
    p.add_argument("--tries", type=int, default=2, help="bisection tries")
    p.add_argument("--eps-max", type=float, default=2000.0)
    p.add_argument("--drop", type=float, default=10.0, help="target = own score - drop")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    import jax
    import jax.numpy as jnp

    from qcamo_jax import attacks

    load_start = os.getloadavg()
    t0 = time.perf_counter()
    calib = photos(args.size, 4)
    tmodel, jmodel = build_models(calib, args.seed)
    setup_s = time.perf_counter() - t0
    x = photos(args.size, args.batch).astype(np.float32)

    # Same model on both sides: scores of the clean images.
    from qcamo_jax.testing import torch_koncept

    s_torch = torch_koncept.scores(tmodel, x)
    s_jax = np.asarray(jax.jit(jmodel.apply)(jmodel.variables, jnp.asarray(x)))
    targets = (s_torch - args.drop).astype(np.float32)

    # The PyTorch mirror implements the paper's plain variant: constant steps, every try from the
    # original, no refinement; configure the JAX attack identically.
    cfg = attacks.SearchConfig.paper(
        pgd=attacks.PGDConfig(steps=args.steps, early_stop=False, schedule="constant"), eps_max=args.eps_max,
        bisection_steps=args.tries)
    run = attacks.make_attack(jmodel.score_one, "search", cfg)
    xj, tj = jnp.asarray(x), jnp.asarray(targets)
    t0 = time.perf_counter()
    compiled = run.lower(jmodel.variables, xj, tj, None).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    adv_j, res_j = compiled(jmodel.variables, xj, tj, None)
    jax.block_until_ready((adv_j, res_j))
    jax_s = time.perf_counter() - t0
    jax_grads = int(np.asarray(res_j.iterations).sum())

    # PyTorch: one warm-up gradient (allocator, thread pool), then the timed attack.
    xt = torch.as_tensor(x[:1]).requires_grad_(True)
    torch.autograd.grad(tmodel(xt.permute(0, 3, 1, 2) / 127.5 - 1.0).sum(), xt)
    t0 = time.perf_counter()
    adv_t, budget_t, success_t, torch_grads = torch_search(tmodel, x, targets, args.eps_max, args.tries, args.steps)
    torch_s = time.perf_counter() - t0

    report = {
        "benchmark": "attack_pgd: L2 PGD + per-image budget bisection, gradient evaluations per second",
        "model": "KonCept512 (MediaEval variant, InceptionResNetV2), random calibrated weights, same on both sides",
        "config": {"size": list(args.size), "batch": args.batch, "steps": args.steps, "tries": args.tries,
                   "eps_max": args.eps_max, "target": f"own score - {args.drop}", "early_stop": False,
                   "schedule": "constant", "warm_start": False, "refine_steps": 0},
        "parity": {"clean_score_max_abs_diff": float(np.max(np.abs(s_torch - s_jax))),
                   "success_jax": np.asarray(res_j.success).tolist(), "success_torch": success_t.tolist(),
                   "budget_jax": np.round(np.asarray(res_j.budget), 2).tolist(),
                   "budget_torch": np.round(budget_t, 2).tolist(),
                   "adv_max_abs_diff": float(np.max(np.abs(np.asarray(adv_j) - adv_t)))},
        "jax": {"compile_s": round(compile_s, 2), "run_s": round(jax_s, 3), "grad_evals": jax_grads,
                "grads_per_s": round(jax_grads / jax_s, 3), "version": jax.__version__,
                "backend": jax.default_backend()},
        "torch": {"run_s": round(torch_s, 3), "grad_evals": torch_grads, "grads_per_s": round(torch_grads / torch_s, 3),
                  "version": torch.__version__, "threads": torch.get_num_threads()},
        "speedup_jax_over_torch": round((jax_grads / jax_s) / (torch_grads / torch_s), 3),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_start": [round(v, 2) for v in load_start],
                    "loadavg_end": [round(v, 2) for v in os.getloadavg()], "setup_s": round(setup_s, 1)},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        from qcamo_jax.fileio import atomic_write

        with atomic_write(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
