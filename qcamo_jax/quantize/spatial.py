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
towards lower loss. The flips are sorted once, and a search over their count
(:func:`qcamo_jax.quantize.search.search_flips`: the input itself first, then all flips, then a
bisection) finds the smallest ``lambda`` whose *true* loss is below ``-margin``. The true loss is the
worst over the PNG as saved and its exact round trip through every re-encoder of ``config.survive``
(:mod:`qcamo_jax.quantize.survival`); each step evaluates exactly the image that will be written, so
the output's scores are the scores the saved PNG will have (and has after each re-encoder).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from qcamo_jax.jpeg import reencoders
from qcamo_jax.quantize import survival
from qcamo_jax.quantize.search import RTOL, limit_flips, search_flips

ScoreFn = Callable[[Mapping[str, Any], jax.Array], jax.Array]


class SpatialConfig(NamedTuple):
    """Options of :func:`quantize_spatial` (hashable: a static option under ``jit``).

    Attributes:
      margin: required safety margin: success means every score ``< target - margin`` (score units).
      survive: :class:`~qcamo_jax.jpeg.reencoders.ReencoderSet` the PNG must stay adversarial after
        (each member re-encodes the PNG's pixels, e.g. ImageMagick q90 = IFAST 4:4:4); empty (the
        default, the paper's setting) = the PNG as saved only.
      gradient: the loss whose gradient orders the pixels: ``"worst"`` (the member with the highest
        score at the attacked image) or ``"mean"`` over ``{as saved} U survive`` (differentiable round
        trips, :mod:`qcamo_jax.jpeg.diff`).
      max_l2: largest accepted L2 of output minus original (pixel units), or ``None``.
      min_psnr: smallest accepted PSNR of the output against the original (dB), or ``None``.
      search: how the bracket on the candidate index is narrowed: ``"itp"`` (interpolation along the
        first-order loss, a few candidates per image) or ``"bisection"`` (the paper's; ``log2`` of the
        entry count): :mod:`qcamo_jax.quantize.search`, docs/quantize.md "Search cost".
      search_rtol: the search stops when its bracket is within this share of the candidate index
        (``0``: adjacent candidates, the exact smallest evaluated success).
    """

    margin: float = 0.0
    survive: reencoders.ReencoderSet = reencoders.ReencoderSet()
    gradient: str = "worst"
    max_l2: float | None = None
    min_psnr: float | None = None
    search: str = "itp"
    search_rtol: float = RTOL


class QuantizeResult(NamedTuple):
    """Per-image outcome of a quantizer (every field ``[B]`` when batched; ``scores`` ``[B, 1 + E]``).

    Attributes:
      score: the worst score of the output over ``{as saved} U`` the re-encoder set (= the saved file's
        score with an empty set): the number that decides success.
      loss: ``score - target``.
      success: ``score < target - margin`` and the output within the distortion limit.
      lam: the lambda chosen by the search (0 means the smallest perturbation was enough).
      flipped: how many entries moved away from the ``lambda = 0`` solution.
      l2: L2 norm of the output minus the original, in pixel units (0-255).
      evaluations: candidate outputs scored per image (each costs ``1 + E`` forward passes) plus the
        gradient passes (``gradients``).
      scores: float32 ``[1 + E]``: as saved, then after each unique round trip of the set, in the order
        of ``survive.emulations(kind)`` (map members with ``survive.columns(kind)``).
      already_below_target: the zero-change output (the input pixels for PNG, the plain JPEG encoding
        for the DCT quantizer) already met the target under the whole set; it is the output.
      within_limit: the output's distortion is within ``max_l2`` / ``min_psnr``.
      gradients: int32, gradient passes through the model (and every round trip of the set): 1, or 0
        for the DCT quantizer's ``candidates="attack"`` when the attack moved the image.
    """

    score: jax.Array
    loss: jax.Array
    success: jax.Array
    lam: jax.Array
    flipped: jax.Array
    l2: jax.Array
    evaluations: jax.Array
    scores: jax.Array
    already_below_target: jax.Array
    within_limit: jax.Array
    gradients: jax.Array


def check_common(margin: float, survive, gradient: str) -> reencoders.ReencoderSet:
    """Validate the options shared by the quantizers; returns the re-encoder set."""
    if gradient not in survival.REDUCTIONS:
        raise ValueError(f"gradient must be one of {survival.REDUCTIONS}, got {gradient!r}")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0 (score units), got {margin}")
    return reencoders.resolve(survive)


def quantize_spatial_one(
    score_fn: ScoreFn, variables: Mapping[str, Any], original: jax.Array, adversarial: jax.Array, target: jax.Array,
    config: SpatialConfig = SpatialConfig(),
):
    """Quantize one image. ``original`` ``uint8 [H, W, 3]``, ``adversarial`` float ``[H, W, 3]`` pixels.

    Returns:
      ``(quantized uint8 [H, W, 3], QuantizeResult of scalars)``.
    """
    survive = check_common(config.margin, config.survive, config.gradient)
    emus = survive.emulations("png")
    h, w, _ = original.shape
    limit = survival.l2_limit(h, w, config.max_l2, config.min_psnr)
    xo = original.astype(jnp.float32)
    xa = jnp.clip(adversarial.astype(jnp.float32), 0.0, 255.0)
    g = jax.grad(lambda x: survival.smooth_score(score_fn, variables, x, emus, config.gradient))(xa)
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
        """Candidate ``k``: ``-1`` is the input itself (zero change), ``k >= 0`` the ``lambda`` family."""
        up = jnp.where(rank < jnp.minimum(k, n_helps), ~base_up, base_up)
        return jnp.where(k < 0, xo, jnp.where(up, hi_px, lo_px))

    def evaluate(k):
        scores = survival.exact_scores(score_fn, variables, candidate(k).astype(jnp.uint8), emus)
        return jnp.max(scores) - target, scores

    # The input itself (k = -1) is tried first: one that already meets the target is returned untouched.
    k_cap, _ = limit_flips(lambda k: jnp.sqrt(jnp.sum((candidate(k) - xo) ** 2)), n_helps, n, limit, zero=-1)
    # First-order loss change against candidate 0 (the search's interpolation coordinate): each flip
    # moves one pixel by one level against its gradient, so candidate k gains the k largest-ranked |g|.
    gains = jnp.cumsum(jnp.where(jnp.isfinite(sorted_lam), jnp.abs(g.reshape(-1))[order], 0.0))
    base_px = jnp.where(base_up, hi_px, lo_px)
    input_gain = jnp.sum(g * (xo - base_px))

    def predict(k):
        return jnp.where(k < 0, input_gain, -jnp.where(k > 0, gains[jnp.clip(k - 1, 0, n - 1)], 0.0))

    found = search_flips(evaluate, k_cap, n, config.margin, zero=-1, predict=predict, rtol=config.search_rtol,
                         method=config.search)
    out = candidate(found.k)
    k = jnp.maximum(found.k, 0)
    lam = jnp.where(k > 0, sorted_lam[jnp.maximum(k - 1, 0)], 0.0)
    l2 = jnp.sqrt(jnp.sum((out - xo) ** 2))
    within = l2 <= limit
    # evaluations: candidates scored plus one gradient
    result = QuantizeResult(found.loss + target, found.loss, found.success & within, lam, k, l2,
                            found.evaluations + 1, found.aux, found.zero_ok, within, jnp.int32(1))
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
