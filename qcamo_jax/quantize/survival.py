"""Scores of an output under the threat model: as saved, and after every round trip of a re-encoder set.

Data contract: one image (``vmap`` for batches). ``pixels`` ``uint8 [H, W, 3]`` (the exact file as a
decoder shows it) or ``float32 [H, W, 3]`` pixel units 0-255 (differentiable paths); ``emulations`` a
static tuple of :class:`qcamo_jax.jpeg.reencoders.Emulation`; scores in model units.

The worst case over ``{as saved} U set`` decides success (issue 12): an output succeeds only when every
score is below the target. Column 0 of every score vector is "as saved", column ``1 + i`` the
``i``-th emulation.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from qcamo_jax.jpeg import reencoders

ScoreFn = Callable[[Mapping[str, Any], jax.Array], jax.Array]

REDUCTIONS = ("worst", "mean")


def exact_scores(score_fn: ScoreFn, variables: Mapping[str, Any], pixels: jax.Array, emulations) -> jax.Array:
    """float32 ``[1 + E]``: the model's score of ``pixels`` as saved and after each exact round trip.

    The ``1 + E`` images go through the model as one batch (one forward pass of batch ``1 + E``).
    """
    pixels = jnp.asarray(pixels, jnp.uint8)
    stack = jnp.concatenate([pixels[None], reencoders.roundtrips(pixels, emulations)]).astype(jnp.float32)
    return jax.vmap(lambda x: score_fn(variables, x))(stack)


def smooth_score(score_fn: ScoreFn, variables: Mapping[str, Any], image: jax.Array, emulations,
                 reduce: str = "worst") -> jax.Array:
    """Differentiable score of float ``image`` under the set: ``max`` (``"worst"``) or ``mean`` over
    ``{image} U`` the differentiable round trips (:func:`qcamo_jax.jpeg.reencoders.roundtrips_diff`).

    With an empty set this is ``score_fn(variables, image)``. ``"worst"``'s gradient is that of the
    member with the highest score.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    image = jnp.asarray(image, jnp.float32)
    stack = jnp.concatenate([image[None], reencoders.roundtrips_diff(image, emulations)])
    s = jax.vmap(lambda x: score_fn(variables, x))(stack)
    return jnp.max(s) if reduce == "worst" else jnp.mean(s)


def survival_score_fn(score_fn: ScoreFn, survive, input_kind: str, reduce: str = "mean") -> ScoreFn:
    """A ``ScoreFn`` whose score is :func:`smooth_score` over ``survive`` (for the attacks).

    Args:
      score_fn: ``(variables, image float [H, W, 3]) -> scalar``.
      survive: :class:`~qcamo_jax.jpeg.reencoders.ReencoderSet` or spec string.
      input_kind: what the re-encoders will read: ``"png"`` or the written JPEG's ``"444"``/``"420"``.
      reduce: ``"mean"`` or ``"worst"``.
    """
    emus = reencoders.resolve(survive).emulations(input_kind)
    return lambda variables, image: smooth_score(score_fn, variables, image, emus, reduce)


def l2_limit(height: int, width: int, max_l2: float | None = None, min_psnr: float | None = None) -> float:
    """The largest output-minus-original L2 (pixel units, over ``H * W * 3`` values) both limits allow.

    ``PSNR = 20 log10(255 / RMSE)`` with ``RMSE = L2 / sqrt(3 H W)``, so ``min_psnr`` means
    ``L2 <= 255 sqrt(3 H W) 10^(-min_psnr / 20)``. ``None`` = no limit (``inf``).

    Raises:
      ValueError: a negative ``max_l2`` or a non-finite ``min_psnr``.
    """
    limit = math.inf
    if max_l2 is not None:
        if not max_l2 >= 0:
            raise ValueError(f"max_l2 must be >= 0 (pixel units), got {max_l2}")
        limit = float(max_l2)
    if min_psnr is not None:
        if not math.isfinite(min_psnr):
            raise ValueError(f"min_psnr must be a finite number of dB, got {min_psnr}")
        limit = min(limit, 255.0 * math.sqrt(3.0 * height * width) * 10.0 ** (-float(min_psnr) / 20.0))
    return limit
