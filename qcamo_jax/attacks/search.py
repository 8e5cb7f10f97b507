"""The paper's attack: per-image bisection over the perturbation budget, one PGD run per try.

Bonnet, Furon & Bas (MediaEval 2020) wrap L2 PGD in a binary search over the L2 budget (7 steps,
budget at most 2000 pixel units) to find, per image, the smallest distortion that still brings the
score below the target. Here each image of a batch runs its own search (own interval, own budgets, own
early stops) inside one ``vmap``-ed, ``lax``-looped program:

  * try ``k`` (``lax.fori_loop`` over ``bisection_steps``) runs :func:`pgd.pgd_single` from the
    original image with budget ``eps = (lo + hi) / 2``;
  * success (``L < 0``): ``hi`` <- the distortion actually reached (<= eps: PGD with early stop often
    succeeds inside its ball, and that distortion is itself a valid upper bound on the minimum);
    failure: ``lo`` <- eps;
  * with ``warm_start`` (default) try ``k > 0`` starts from the kept image projected into its ball
    instead of from the original, so the tries add up instead of each starting over (the paper's
    code restarts from the original: ``warm_start=False``);
  * the smallest successful distortion is kept (an image that never succeeds returns its lowest-loss
    iterate, flagged ``success = False``);
  * optionally (``refine_steps``) a forward-only bisection on ``t in [0, 1]`` shrinks the kept
    perturbation to the smallest ``t * delta`` that still succeeds (trims PGD's overshoot).

Data contract: ``images`` ``float32 [B, H, W, 3]`` pixel units (0-255), ``targets`` ``[B]`` score
targets, budgets in pixel units of the configured norm (L2 over all H*W*3 values by default).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from qcamo_jax.attacks import projections
from qcamo_jax.attacks.config import AttackResult, SearchConfig
from qcamo_jax.attacks.losses import LossFn, ScoreFn, make_loss, with_transform
from qcamo_jax.attacks.pgd import broadcast_batch, check_images, per_image_keys, pgd_single


class SearchOutcome(NamedTuple):
    """One image's search: the kept image, its loss/score, budget and distortion, gradient evaluations."""

    x: jax.Array
    loss: jax.Array
    score: jax.Array
    budget: jax.Array
    distortion: jax.Array
    iterations: jax.Array


class _State(NamedTuple):
    lo: jax.Array
    hi: jax.Array
    found: jax.Array
    best_x: jax.Array
    best_loss: jax.Array
    best_score: jax.Array
    best_budget: jax.Array
    best_dist: jax.Array
    iterations: jax.Array


def search_single(
    loss_fn: LossFn, variables: Any, x0: jax.Array, target: jax.Array, key: jax.Array, config: SearchConfig
) -> SearchOutcome:
    """Budget bisection for one image ``x0`` ``float32 [H, W, 3]`` (pixels); see the module docstring.

    Args:
      loss_fn: ``(variables, image, target) -> (loss, score)``.
      variables: model variables.
      x0: original image, pixel units.
      target: scalar score target.
      key: PRNG key; try ``k`` uses ``fold_in(key, k)`` (only drawn from with ``random_start``).
      config: :class:`SearchConfig`.

    Returns:
      :class:`SearchOutcome` (scalars and the ``[H, W, 3]`` image).
    """
    x0 = jnp.asarray(x0, jnp.float32)
    norm = config.pgd.norm
    loss0, score0 = loss_fn(variables, x0, target)
    inf = jnp.float32(jnp.inf)
    init = _State(
        lo=jnp.float32(0.0), hi=jnp.float32(config.eps_max), found=jnp.asarray(False), best_x=x0,
        best_loss=loss0, best_score=score0, best_budget=jnp.float32(0.0), best_dist=inf,
        iterations=jnp.int32(0),
    )

    def one_try(k: int, s: _State) -> _State:
        eps = 0.5 * (s.lo + s.hi)
        x_init = None
        if config.warm_start:
            x_init = s.best_x
            if config.pgd.random_start:  # the first try starts at random, the next ones warm
                rnd = x0 + projections.random_delta(jax.random.fold_in(key, k), x0.shape, eps, norm)
                x_init = jnp.where(k == 0, rnd, s.best_x)
        out = pgd_single(loss_fn, variables, x0, target, jax.random.fold_in(key, k), eps, config.pgd, x_init)
        success = out.loss < 0
        dist = projections.distortion(out.x - x0, norm)
        # Ties go to the later try: its budget is smaller (an image adversarial from the start ends
        # with distortion 0 and budget 0, not the first try's budget).
        keep = jnp.where(s.found, success & (dist <= s.best_dist), success | (out.loss < s.best_loss))
        # A success at a distortion below `lo` means an earlier failure was PGD's, not the budget's:
        # collapse the interval onto the new upper bound rather than keep an inverted one.
        hi = jnp.where(success, dist, s.hi)
        lo = jnp.where(success, jnp.minimum(s.lo, dist), eps)
        pick = lambda new, old: jnp.where(keep, new, old)  # noqa: E731
        return _State(
            lo=lo, hi=hi, found=s.found | success, best_x=pick(out.x, s.best_x), best_loss=pick(out.loss, s.best_loss),
            best_score=pick(out.score, s.best_score), best_budget=pick(eps, s.best_budget),
            best_dist=pick(dist, s.best_dist), iterations=s.iterations + out.iterations,
        )

    s = jax.lax.fori_loop(0, config.bisection_steps, one_try, init)
    x, loss, score = s.best_x, s.best_loss, s.best_score
    if config.refine_steps > 0:
        x, loss, score = _refine(loss_fn, variables, x0, target, s, config.refine_steps)
    dist = projections.distortion(x - x0, norm)
    return SearchOutcome(x, loss, score, s.best_budget, dist, s.iterations)


def _refine(loss_fn: LossFn, variables: Any, x0, target, s: _State, n: int):
    """Smallest ``t`` in ``[0, 1]`` (to ``2^-n``) with ``L(x0 + t * delta) < 0``; forward passes only.

    ``x0 + t * delta`` stays in the pixel box and in the budget ball for every ``t`` in [0, 1]
    (both sets are convex and contain ``x0`` and ``x0 + delta``).
    """
    delta = s.best_x - x0

    def body(_, c):
        lo, hi, loss_hi, score_hi = c
        t = 0.5 * (lo + hi)
        loss, score = loss_fn(variables, x0 + t * delta, target)
        ok = loss < 0
        return (jnp.where(ok, lo, t), jnp.where(ok, t, hi), jnp.where(ok, loss, loss_hi), jnp.where(ok, score, score_hi))

    _, t, loss, score = jax.lax.fori_loop(
        0, n, body, (jnp.float32(0.0), jnp.float32(1.0), s.best_loss, s.best_score))
    x = jnp.where(t < 1.0, x0 + t * delta, s.best_x)
    # Only a successful image is trimmed; a failed one keeps its best-effort iterate.
    return (jnp.where(s.found, x, s.best_x), jnp.where(s.found, loss, s.best_loss),
            jnp.where(s.found, score, s.best_score))


def budget_search(
    score_fn: ScoreFn,
    variables: Any,
    images: jax.Array,
    targets: jax.Array,
    key: jax.Array | None = None,
    config: SearchConfig = SearchConfig(),
    *,
    transform=None,
) -> tuple[jax.Array, AttackResult]:
    """Batched budget search (the paper's attack); each image gets its own budget.

    Args:
      score_fn: ``(variables, image float32 [H, W, 3] pixels) -> scalar`` (e.g. ``model.score_one``).
      variables: the model's variables.
      images: ``float32 [B, H, W, 3]`` originals, pixel units (0-255).
      targets: ``float32 [B]`` or scalar score targets ``T``.
      key: PRNG key (split per image) or ``[B]`` keys; needed only with ``config.pgd.random_start``.
      config: :class:`SearchConfig`.
      transform: optional differentiable ``image -> image`` applied before scoring (e.g. a
        differentiable JPEG round trip, for a JPEG-aware attack).

    Returns:
      ``(adversarial float32 [B, H, W, 3] pixels, AttackResult)``; ``budget`` is the smallest budget
      that succeeded, ``iterations`` the gradient evaluations over all tries.

    Example:
      >>> run = attacks.make_attack(model.score_one, "search")           # jitted once per shape
      >>> adv, res = run(model.variables, images, targets, jax.random.key(0))
    """
    if config.pgd.random_start and key is None:
        raise ValueError("random_start needs a PRNG key")
    images = check_images(images)
    batch = images.shape[0]
    loss_fn = make_loss(with_transform(score_fn, transform), config.pgd.margin)
    keys = per_image_keys(key, batch)
    targets = broadcast_batch(targets, batch)

    def one(x0, target, k):
        out = search_single(loss_fn, variables, x0, target, k, config)
        delta = out.x - x0
        res = AttackResult(out.score, projections.l2_norm(delta), projections.linf_norm(delta), out.budget,
                           out.loss < 0, out.iterations)
        return out.x, res

    return jax.vmap(one)(images, targets, keys)
