"""Spatial quantizer: turn a float adversarial image into 8-bit pixels that stay adversarial.

Bonnet, Furon, Bas, "What if adversarial samples were digital images?", ACM IH&MMSec 2020.

Data contract: ``originals`` are ``uint8 [B, H, W, 3]`` pixels, ``adversarial`` ``float32 [B, H, W, 3]``
pixels in [0, 255] (the output of an attack), ``targets`` ``float32 [B]`` on the score scale. The loss
of a regressor is ``L(x) = score(x) - T``; ``L < 0`` is success.

Per pixel the integer perturbation ``q`` (in pixel units, relative to the original ``x_o``) is either
``floor(u)`` or ``ceil(u)`` with ``u = x_a - x_o``. The quantizer minimises the distortion plus a
weighted first-order loss,

    ||q||^2 + lambda * g . q,        g = grad L(x_a),

which separates per pixel: take ``ceil(u)`` iff ``(2 floor(u) + 1) + lambda g < 0``. ``lambda = 0``
is the smallest perturbation in the box (rounding towards the original); growing ``lambda`` flips,
one by one, the pixels whose switching point ``lambda_j = -(2 floor(u_j) + 1) / g_j`` is positive, each
towards lower loss. The flips are sorted once, and a bisection over their count finds the smallest
``lambda`` whose *true* loss (the model run on the rounded image) is below ``-margin``. Each bisection
step is exact (it evaluates exactly the image that will be written) so the output's score is the score
the saved PNG will have.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp

ScoreFn = Callable[[Mapping[str, Any], jax.Array], jax.Array]


class SpatialConfig(NamedTuple):
    """Options of :func:`quantize_spatial`.

    Attributes:
      margin: required safety margin: success means ``score < target - margin`` (score units).
    """

    margin: float = 0.0


class QuantizeResult(NamedTuple):
    """Per-image outcome of a quantizer (every field ``[B]``).

    Attributes:
      score: true score of the quantized output (the saved file as the model sees it).
      loss: ``score - target``.
      success: ``score < target - margin``.
      lam: the lambda chosen by the bisection (0 means the smallest perturbation was enough).
      flipped: how many entries moved away from the ``lambda = 0`` solution.
      l2: L2 norm of the output minus the original, in pixel units (0-255).
      evaluations: how many times the model was run per image.
    """

    score: jax.Array
    loss: jax.Array
    success: jax.Array
    lam: jax.Array
    flipped: jax.Array
    l2: jax.Array
    evaluations: jax.Array


def bisection_steps(n: int) -> int:
    """Number of halvings that reduce ``[0, n]`` to one point."""
    return max(1, math.ceil(math.log2(n + 1)))


def search_flips(loss_of: Callable[[jax.Array], jax.Array], n: jax.Array, n_max: int, margin: float):
    """Smallest flip count ``k`` in ``[0, n]`` with ``loss_of(k) < -margin`` (bisection).

    ``n`` may be traced; ``n_max >= n`` is static and fixes the number of steps (one compile per shape).

    ``loss_of(k)`` is the true loss of the candidate with the ``k`` first switching points applied.
    ``k = n`` is evaluated first; if it fails, it is returned (the best the quantizer can do). The
    bisection keeps ``hi`` a verified success, so the returned candidate was evaluated, even if the
    loss is not monotone in ``k``.

    Returns:
      ``(k, loss_at_k, evaluations)``, int32 / float32 / int32 scalars.
    """
    n = jnp.asarray(n, jnp.int32)
    loss_hi = loss_of(n)

    def body(_, carry):
        lo, hi, l_hi = carry  # loss(lo) assumed failing (lo = -1 is "nothing"), loss(hi) succeeds
        mid = (lo + hi) // 2
        # When the interval is closed (hi - lo <= 1) mid == lo; skip the work by testing hi again.
        active = hi - lo > 1
        k = jnp.where(active, jnp.maximum(mid, 0), hi)
        l_mid = loss_of(k)
        ok = active & (l_mid < -margin)
        return (jnp.where(active & ~ok, mid, lo), jnp.where(ok, mid, hi), jnp.where(ok, l_mid, l_hi))

    steps = bisection_steps(n_max + 1)
    lo, hi, l_hi = jax.lax.fori_loop(0, steps, body, (jnp.int32(-1), n, loss_hi))
    del lo
    return hi, l_hi, jnp.int32(steps + 1)


def quantize_spatial_one(
    score_fn: ScoreFn, variables: Mapping[str, Any], original: jax.Array, adversarial: jax.Array, target: jax.Array,
    config: SpatialConfig = SpatialConfig(),
):
    """Quantize one image. ``original`` ``uint8 [H, W, 3]``, ``adversarial`` float ``[H, W, 3]`` pixels.

    Returns:
      ``(quantized uint8 [H, W, 3], QuantizeResult of scalars)``.
    """
    xo = original.astype(jnp.float32)
    xa = jnp.clip(adversarial.astype(jnp.float32), 0.0, 255.0)
    g = jax.grad(lambda x: score_fn(variables, x))(xa)
    # Exact-integer pixels stay (floor == ceil); the perturbation is computed in integer pixel steps.
    lo_px = jnp.floor(xa)
    hi_px = jnp.ceil(xa)
    f = lo_px - xo
    can_flip = hi_px > lo_px
    # lambda = 0 solution: the bracket end nearest to the original.
    base_up = (2.0 * f + 1.0) < 0.0
    # Moving away from the base choice changes the first-order loss by -(or +) g; it helps iff the
    # move decreases g . q, i.e. going up with g < 0 or going down with g > 0.
    helps = can_flip & jnp.where(base_up, g > 0, g < 0)
    # Switching point of pixel j: (2 f + 1) + lambda g = 0  ->  lambda = -(2 f + 1) / g (> 0 when helps).
    safe_g = jnp.where(helps, g, 1.0)
    lam_j = jnp.where(helps, -(2.0 * f + 1.0) / safe_g, jnp.inf).reshape(-1)
    order = jnp.argsort(lam_j)
    rank = jnp.empty_like(order).at[order].set(jnp.arange(order.size, dtype=order.dtype)).reshape(xa.shape)
    n = lam_j.size
    n_helps = jnp.sum(helps, dtype=jnp.int32)
    sorted_lam = lam_j[order]

    def candidate(k):
        up = jnp.where(rank < jnp.minimum(k, n_helps), ~base_up, base_up)
        return jnp.where(up, hi_px, lo_px)

    def loss_of(k):
        return score_fn(variables, candidate(k)) - target

    k, loss, evals = search_flips(loss_of, n_helps, n, config.margin)
    out = candidate(k)
    lam = jnp.where(k > 0, sorted_lam[jnp.maximum(k - 1, 0)], 0.0)
    l2 = jnp.sqrt(jnp.sum((out - xo) ** 2))
    result = QuantizeResult(loss + target, loss, loss < -config.margin, lam, k, l2, evals)
    return out.astype(jnp.uint8), result


def quantize_spatial(
    score_fn: ScoreFn, variables: Mapping[str, Any], originals: jax.Array, adversarial: jax.Array, targets: jax.Array,
    config: SpatialConfig = SpatialConfig(),
):
    """Batched spatial quantizer (vmap of :func:`quantize_spatial_one`); jit it at the call site.

    Args:
      score_fn: ``score_fn(variables, image float [H, W, 3] pixels) -> scalar``.
      variables: model variables.
      originals: ``uint8 [B, H, W, 3]``.
      adversarial: float ``[B, H, W, 3]`` pixels in [0, 255] (values outside are clipped).
      targets: ``float32 [B]`` target scores T.
      config: :class:`SpatialConfig`.

    Returns:
      ``(quantized uint8 [B, H, W, 3], QuantizeResult of [B] arrays)``.

    Example:
      >>> fn = jax.jit(lambda v, o, a, t: quantize_spatial(model.score_one, v, o, a, t))  # doctest: +SKIP
      >>> png_pixels, res = fn(model.variables, originals, adv, targets)  # doctest: +SKIP
    """
    one = lambda o, a, t: quantize_spatial_one(score_fn, variables, o, a, t, config)
    return jax.vmap(one)(originals, adversarial, jnp.broadcast_to(jnp.asarray(targets, jnp.float32), originals.shape[:1]))
