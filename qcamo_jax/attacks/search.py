"""The paper's attack: a per-image search over the perturbation budget, one PGD run per try.

Bonnet, Furon & Bas (MediaEval 2020) wrap L2 PGD in a binary search over the L2 budget (7 steps,
budget at most 2000 pixel units) to find, per image, the smallest distortion that still brings the
score below the target. Here each image of a batch runs its own search (own interval, own budgets, own
early stops) inside one ``lax``-looped program, ``vmap``-ed over the batch (a batch of one runs
unbatched: :func:`qcamo_jax.batching.map_images`):

  * the first try's budget is the first-order estimate ``first_guess * L(x0) / ||dL/dx(x0)||_*`` (the
    paper: ``eps_max / 2``); its gradient is reused by the first PGD step (:class:`pgd.KnownGradient`);
  * try ``k`` (a ``lax.while_loop``, at most ``bisection_steps`` tries) runs :func:`pgd.pgd_single` with
    budget ``eps``; success (``L < 0``): ``hi`` <- the distortion actually reached (<= eps: PGD with
    early stop often succeeds inside its ball, and that distortion is itself a valid upper bound on
    the minimum); failure: ``lo`` <- eps;
  * the next budget: ``"bisection"`` (the paper) the middle of ``(lo, hi)``, growing by doubling from
    the first guess until the first success; ``"secant"`` (default) the zero of the line through the
    last two failed ``(budget, loss)`` points, aimed past it (:data:`SECANT_GROWTH`) until the first
    success and a little past it inside the bracket (:data:`SECANT_AIM`, :data:`SECANT_GUARD`) after;
  * an image stops once it has succeeded and ``hi - lo <= rtol * hi``;
  * with ``warm_start`` (default) a try starts from the previous tries' work instead of the original
    image (the paper's code restarts: ``warm_start=False``): from the last try's final iterate until the
    first success (the next, larger ball contains it), from the smallest success (shrunk into the
    smaller ball) after it;
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
from qcamo_jax.batching import map_images
from qcamo_jax.attacks.config import AttackResult, SearchConfig
from qcamo_jax.attacks.losses import LossFn, ScoreFn, make_loss, with_transform
from qcamo_jax.attacks.pgd import KnownGradient, broadcast_batch, check_images, per_image_keys, pgd_single


class SearchOutcome(NamedTuple):
    """One image's search: the kept image, its loss/score, budget and distortion, gradient evaluations."""

    x: jax.Array
    loss: jax.Array
    score: jax.Array
    budget: jax.Array
    distortion: jax.Array
    iterations: jax.Array


class _State(NamedTuple):
    k: jax.Array
    eps: jax.Array
    lo: jax.Array
    hi: jax.Array
    found: jax.Array
    best_x: jax.Array
    best_loss: jax.Array
    best_score: jax.Array
    best_budget: jax.Array
    best_dist: jax.Array
    iterations: jax.Array
    start_x: jax.Array  # where the next try starts (warm start)
    line: jax.Array  # float32 [2, 2]: the last two (budget, loss) points that failed, oldest first


#: ``budget="secant"``: before the first success the next budget is this many times the secant's zero
#: (aim past it: a failed try costs every PGD step, a success stops early), at least 1.5x and at most 4x
#: the failed one.
SECANT_GROWTH = 1.25
#: ``budget="secant"`` inside the bracket: aim this many times the secant's zero ...
SECANT_AIM = 1.0
#: ... kept at least this fraction of the bracket away from either end (aim 1.0 / guard 0.25 against
#: 1.1 / 0.2: mean L2 +0.2% instead of +5.9% of the paper's on the default model at 384x512, for 13.9
#: gradients per image instead of 12.3; docs/attacks.md "Gradients per image").
SECANT_GUARD = 0.25


def secant_zero(line: jax.Array) -> jax.Array:
    """Zero of the line through two ``(budget, loss)`` points ``line[0]``, ``line[1]``; ``inf`` if it does not fall.

    Args:
      line: ``float32 [2, 2]``, rows ``(budget, loss)``, the smaller budget first.

    Returns:
      ``float32`` scalar: the budget where the line reaches loss 0 (``>= line[1, 0]`` when the loss at
      ``line[1]`` is positive), or ``inf`` when the loss does not decrease between the points.
    """
    (e1, l1), (e2, l2) = line[0], line[1]
    falls = (l1 > l2) & (e2 > e1)
    slope = jnp.where(falls, (l1 - l2) / jnp.where(falls, e2 - e1, 1.0), 1.0)
    return jnp.where(falls, e2 + l2 / slope, jnp.inf)


def search_single(
    loss_fn: LossFn, variables: Any, x0: jax.Array, target: jax.Array, key: jax.Array, config: SearchConfig
) -> SearchOutcome:
    """Budget search for one image ``x0`` ``float32 [H, W, 3]`` (pixels); see the module docstring.

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
    eps_max = jnp.float32(config.eps_max)
    g0 = None
    if config.first_guess > 0:
        (loss0, score0), g0 = jax.value_and_grad(lambda x: loss_fn(variables, x, target), has_aux=True)(x0)
        slope0 = projections.dual_norm(g0, norm)
        eps0 = jnp.clip(config.first_guess * loss0 / (slope0 + 1e-20), 1e-3 * eps_max, eps_max)
        grads0 = jnp.int32(1)
        # An image already below its target is a success at distortion 0 (with rtol, no try runs).
        found0 = loss0 < 0
        # The first-order model of the loss along the budget: a line through (0, L0) with slope -||g||_*.
        line0 = jnp.stack([jnp.stack([-1.0, loss0 + slope0]), jnp.stack([0.0, loss0])]).astype(jnp.float32)
    else:
        loss0, score0 = loss_fn(variables, x0, target)
        eps0, grads0, found0 = 0.5 * eps_max, jnp.int32(0), jnp.asarray(False)
        line0 = jnp.stack([jnp.stack([0.0, loss0]), jnp.stack([0.0, loss0])]).astype(jnp.float32)  # no line yet
    inf = jnp.float32(jnp.inf)
    init = _State(
        k=jnp.int32(0), eps=eps0, lo=jnp.float32(0.0), hi=jnp.where(found0, 0.0, eps_max), found=found0, best_x=x0,
        best_loss=loss0, best_score=score0, best_budget=jnp.float32(0.0), best_dist=jnp.where(found0, 0.0, inf),
        iterations=grads0, start_x=x0, line=line0,
    )

    def next_budget(lo, hi, found, eps, line):
        mid = 0.5 * (lo + hi)
        grow = jnp.minimum(mid, 2.0 * eps) if config.first_guess > 0 else mid
        if config.budget == "bisection":
            # Until the first success, grow from the (first-order) guess instead of jumping to the
            # middle of (guess, eps_max]: the guess is usually the right order of magnitude.
            return jnp.where(found, mid, grow)
        z = secant_zero(line)
        ahead = jnp.minimum(jnp.clip(SECANT_GROWTH * z, 1.5 * eps, 4.0 * eps), mid)
        guard = SECANT_GUARD * (hi - lo)
        inside = jnp.clip(SECANT_AIM * z, lo + guard, hi - guard)
        return jnp.where(jnp.isfinite(z), jnp.where(found, inside, ahead), jnp.where(found, mid, grow))

    def converged(s: _State) -> jax.Array:
        if config.rtol > 0:
            return s.found & (s.hi - s.lo <= config.rtol * s.hi)
        return jnp.asarray(False)

    def one_try(s: _State) -> _State:
        k, eps = s.k, s.eps
        x_init = None
        if config.warm_start:
            x_init = s.start_x
            if config.pgd.random_start:  # the first try starts at random, the next ones warm
                rnd = x0 + projections.random_delta(jax.random.fold_in(key, k), x0.shape, eps, norm)
                x_init = jnp.where(k == 0, rnd, s.start_x)
        # The first try starts at x0, where the first guess already took the gradient: its first step reuses it.
        known = None if g0 is None else KnownGradient(x0, loss0, g0, k == 0)
        out = pgd_single(loss_fn, variables, x0, target, jax.random.fold_in(key, k), eps, config.pgd, x_init, known)
        success = out.loss < 0
        dist = projections.distortion(out.x - x0, norm)
        # Ties go to the later try: its budget is smaller (an image adversarial from the start ends
        # with distortion 0 and budget 0, not the first try's budget).
        keep = jnp.where(s.found, success & (dist <= s.best_dist), success | (out.loss < s.best_loss))
        # A success at a distortion below `lo` means an earlier failure was PGD's, not the budget's:
        # collapse the interval onto the new upper bound rather than keep an inverted one.
        hi = jnp.where(success, dist, s.hi)
        lo = jnp.where(success, jnp.minimum(s.lo, dist), eps)
        line = jnp.where(success, s.line, jnp.stack([s.line[1], jnp.stack([eps, out.loss])]))
        pick = lambda new, old: jnp.where(keep, new, old)  # noqa: E731
        found = s.found | success
        # Until the first success the next, larger ball holds this try's last iterate: go on from there
        # (not from the lowest-loss iterate so far). After it, start from the smallest success.
        best_x = pick(out.x, s.best_x)
        start_x = jnp.where(s.found | success, best_x, out.x)
        return _State(
            k=k + 1, eps=next_budget(lo, hi, found, eps, line), lo=lo, hi=hi, found=found, best_x=best_x,
            best_loss=pick(out.loss, s.best_loss), best_score=pick(out.score, s.best_score),
            best_budget=pick(eps, s.best_budget), best_dist=pick(dist, s.best_dist),
            iterations=s.iterations + out.iterations, start_x=start_x, line=line,
        )

    s = jax.lax.while_loop(lambda s: (s.k < config.bisection_steps) & ~converged(s), one_try, init)
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

    # A batch of one (the CPU engine's lax.map) runs unbatched: the first try's reuse of the first guess's
    # gradient is then a real branch, not a select that computes the gradient anyway.
    return map_images(one, images, targets, keys)
