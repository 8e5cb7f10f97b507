"""Projected gradient descent (L2 / Linf, pixel units) on a quality score, one image at a time.

Data contract: ``images`` ``float32 [B, H, W, 3]`` in pixel units (0-255), ``targets`` ``float32 [B]``
(or a scalar) on the score's scale, budgets ``eps`` in pixel units. The core :func:`pgd_single` attacks
one image with a ``lax.while_loop``; :func:`pgd` ``vmap``s it over the batch. Under ``vmap`` the loop
runs while *any* image is still active and leaves the finished ones unchanged (JAX batches the loop
predicate into a per-image ``select``), so the batch keeps its shape and each image its own budget,
step count and early stop.

Neither function is jitted: jit at the call site, e.g. with :func:`qcamo_jax.attacks.make_attack`
(one compiled program per input shape).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from qcamo_jax.attacks import projections, steps
from qcamo_jax.attacks.config import AttackResult, PGDConfig
from qcamo_jax.attacks.losses import LossFn, ScoreFn, make_loss, with_transform


class PGDOutcome(NamedTuple):
    """One image's PGD run: the final iterate and its loss/score (scalars)."""

    x: jax.Array
    loss: jax.Array
    score: jax.Array
    iterations: jax.Array


class KnownGradient(NamedTuple):
    """The loss and input gradient already computed at one image ``x`` (e.g. the search's first guess).

    :func:`pgd_single` uses them for its first step when it starts exactly at ``x`` (and ``valid``),
    instead of computing the same gradient again; that step is then not counted in ``iterations``.
    """

    x: jax.Array
    loss: jax.Array
    grad: jax.Array
    valid: jax.Array


class _LoopState(NamedTuple):
    i: jax.Array
    x: jax.Array
    opt_state: Any
    done: jax.Array


def pgd_single(
    loss_fn: LossFn,
    variables: Any,
    x0: jax.Array,
    target: jax.Array,
    key: jax.Array,
    eps: jax.Array,
    config: PGDConfig,
    x_init: jax.Array | None = None,
    known: KnownGradient | None = None,
) -> PGDOutcome:
    """PGD on one image: ``x <- project(x - alpha * direction(dL/dx))`` for at most ``config.steps`` steps.

    Args:
      loss_fn: ``(variables, image, target) -> (loss, score)``, see :func:`losses.make_loss`.
      variables: model variables (not differentiated).
      x0: ``float32 [H, W, 3]`` original image, pixel units.
      target: scalar score target ``T``.
      key: PRNG key (used only if ``config.random_start``).
      eps: scalar budget in pixel units (may be traced: one compiled loop serves every budget).
      config: static settings.
      x_init: optional start point ``float32 [H, W, 3]`` (projected onto the ball and the box), e.g. a
        previous run's result (warm start); replaces the random start.
      known: optional :class:`KnownGradient`; if it is valid and its ``x`` is the start point, the
        first step uses its loss and gradient (a ``lax.cond``: a real branch when the image runs
        alone, as in the CPU engine's ``lax.map``; under ``vmap`` both branches run and only the
        count differs).

    Returns:
      :class:`PGDOutcome`; ``iterations`` counts gradient evaluations (an image that is already
      adversarial at an iterate stops there and does not count further ones; a reused ``known``
      gradient is not counted).
    """
    x0 = jnp.asarray(x0, jnp.float32)
    eps = jnp.asarray(eps, jnp.float32)
    alpha = config.step_scale * eps / config.steps
    direction = steps.direction_transform(config.norm, config.gradient, config.normalize)
    grad_fn = jax.value_and_grad(lambda x: loss_fn(variables, x, target), has_aux=True)

    x_start = x0
    if x_init is not None:
        x_start = projections.project(jnp.asarray(x_init, jnp.float32), x0, eps, config.norm, config.pixel_range)
    elif config.random_start:
        delta = projections.random_delta(key, x0.shape, eps, config.norm)
        x_start = projections.project(x0 + delta, x0, eps, config.norm, config.pixel_range)

    def cond(s: _LoopState) -> jax.Array:
        return (s.i < config.steps) & ~s.done

    def loss_and_grad(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        (loss, _), g = grad_fn(x)
        return loss, g

    reuse = jnp.asarray(False)
    if known is not None:
        reuse = known.valid & jnp.all(known.x == x_start)

    def body(s: _LoopState) -> _LoopState:
        if known is None:
            loss, g = loss_and_grad(s.x)
        else:
            loss, g = jax.lax.cond((s.i == 0) & reuse, lambda x: (known.loss, known.grad), loss_and_grad, s.x)
        done = (loss < 0) if config.early_stop else jnp.asarray(False)
        update, opt_state = direction.update(g, s.opt_state, s.x)
        step = alpha
        if config.schedule == "cosine":
            step = alpha * 0.5 * (1.0 + jnp.cos(jnp.pi * s.i.astype(jnp.float32) / config.steps))
        x_new = projections.project(s.x - step * update, x0, eps, config.norm, config.pixel_range)
        # An image that is adversarial at s.x keeps s.x: the iterate that was checked is the one returned.
        x_new = jnp.where(done, s.x, x_new)
        opt_state = jax.tree.map(lambda new, old: jnp.where(done, old, new), opt_state, s.opt_state)
        return _LoopState(s.i + 1, x_new, opt_state, done)

    init = _LoopState(jnp.int32(0), x_start, direction.init(x_start), jnp.asarray(False))
    final = jax.lax.while_loop(cond, body, init)
    loss, score = loss_fn(variables, final.x, target)
    return PGDOutcome(final.x, loss, score, final.i - jnp.where(reuse & (final.i > 0), 1, 0).astype(final.i.dtype))


def per_image_keys(key: jax.Array | None, batch: int) -> jax.Array:
    """One PRNG key per image: a single key is split ``batch`` ways; a ``[B]`` stack of keys is used as is.

    Accepts typed keys (``jax.random.key``) and raw ``uint32 [2]`` keys (``jax.random.PRNGKey``);
    ``None`` gives fixed keys (only valid for attacks that draw no random numbers).
    """
    if key is None:
        key = jax.random.PRNGKey(0)
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    single_ndim = 0 if typed else 1
    if key.ndim == single_ndim:
        return jax.random.split(key, batch)
    if key.ndim == single_ndim + 1 and key.shape[0] == batch:
        return key
    raise ValueError(f"key must be one PRNG key or {batch} stacked keys, got shape {key.shape}")


def broadcast_batch(value: Any, batch: int, dtype=jnp.float32) -> jax.Array:
    """A scalar or ``[B]`` value as ``[B]`` (targets, budgets)."""
    value = jnp.asarray(value, dtype)
    if value.ndim == 0:
        return jnp.broadcast_to(value, (batch,))
    if value.shape != (batch,):
        raise ValueError(f"expected a scalar or shape ({batch},), got {value.shape}")
    return value


def check_images(images: jax.Array) -> jax.Array:
    images = jnp.asarray(images, jnp.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be float32 [B, H, W, 3] pixels, got shape {images.shape}")
    return images


def pgd(
    score_fn: ScoreFn,
    variables: Any,
    images: jax.Array,
    targets: jax.Array,
    key: jax.Array | None = None,
    config: PGDConfig = PGDConfig(),
    *,
    eps: jax.Array | float | None = None,
    transform=None,
) -> tuple[jax.Array, AttackResult]:
    """Batched PGD on a quality score: drive every image's score below its target within its budget.

    Args:
      score_fn: ``(variables, image float32 [H, W, 3] pixels) -> scalar`` (e.g. ``model.score_one``).
      variables: the model's variables.
      images: ``float32 [B, H, W, 3]`` originals, pixel units (0-255).
      targets: ``float32 [B]`` or scalar score targets ``T``.
      key: PRNG key (split per image) or ``[B]`` keys; needed only with ``random_start``.
      config: :class:`PGDConfig`.
      eps: per-image budgets ``[B]`` or a scalar, pixel units; default ``config.eps``.
      transform: optional differentiable ``image -> image`` applied before scoring
        (see :func:`losses.with_transform`).

    Returns:
      ``(adversarial float32 [B, H, W, 3] pixels, AttackResult)``.

    Example:
      >>> run = jax.jit(functools.partial(pgd, model.score_one, config=PGDConfig(eps=500.0)))
      >>> adv, res = run(model.variables, images, targets, jax.random.key(0))
    """
    if config.random_start and key is None:
        raise ValueError("random_start needs a PRNG key")
    images = check_images(images)
    batch = images.shape[0]
    loss_fn = make_loss(with_transform(score_fn, transform), config.margin)
    keys = per_image_keys(key, batch)
    targets = broadcast_batch(targets, batch)
    budgets = broadcast_batch(config.eps if eps is None else eps, batch)

    def one(x0, target, k, e):
        out = pgd_single(loss_fn, variables, x0, target, k, e, config)
        delta = out.x - x0
        res = AttackResult(out.score, projections.l2_norm(delta), projections.linf_norm(delta), e, out.loss < 0,
                           out.iterations)
        return out.x, res

    return jax.vmap(one)(images, targets, keys, budgets)
