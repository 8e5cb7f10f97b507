"""Losses for attacking a quality *regressor*: push the score below a target.

Data contract: ``image`` is ``float32 [H, W, 3]`` in pixel units (0-255); a score function is
``score_fn(variables, image) -> float32 scalar`` (higher = better quality), e.g.
:meth:`qcamo_jax.models.hub.QualityModel.score_one`. Everything here is written for one image;
the attacks batch it with ``vmap``.

The loss of Bonnet, Furon & Bas (MediaEval 2020) is ``L(x) = Q(x) - T``: the attack succeeds iff
``L(x) < 0``. An optional ``margin`` asks for ``Q(x) < T - margin`` instead, which leaves room for what
happens to the image after the attack (8-bit rounding, JPEG re-compression).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

ScoreFn = Callable[[Any, jax.Array], jax.Array]
Transform = Callable[[jax.Array], jax.Array]
LossFn = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def quality_loss(score: jax.Array, target: jax.Array, margin: float | jax.Array = 0.0) -> jax.Array:
    """``L = Q - T + margin``; the image is adversarial iff ``L < 0``.

    Args:
      score: ``float32 [...]`` quality scores ``Q``.
      target: ``float32 [...]`` targets ``T`` (broadcast against ``score``).
      margin: extra score points to go below ``T`` (0 = the paper's loss).

    Returns:
      ``float32 [...]`` loss values.
    """
    return score - target + margin


def is_adversarial(loss: jax.Array) -> jax.Array:
    """``bool [...]``: success iff the loss is strictly negative."""
    return loss < 0


def with_transform(score_fn: ScoreFn, transform: Transform | None) -> ScoreFn:
    """Score an image *after* a differentiable transform: ``x -> score_fn(variables, transform(x))``.

    This is how a JPEG-aware attack is built: pass a differentiable JPEG round trip (pixels -> pixels)
    as ``transform`` and the attack optimises the score of the re-compressed image, with no change to
    the attack code.

    Args:
      score_fn: ``(variables, image float32 [H, W, 3] pixels) -> scalar``.
      transform: ``image float32 [H, W, 3] pixels -> image float32 [H', W', 3] pixels``, differentiable
        (straight-through or smooth surrogates for rounding), or ``None`` for the identity.

    Returns:
      A score function with the same signature as ``score_fn``.
    """
    if transform is None:
        return score_fn

    def transformed_score(variables: Any, image: jax.Array) -> jax.Array:
        return score_fn(variables, transform(image))

    return transformed_score


def make_loss(score_fn: ScoreFn, margin: float = 0.0) -> LossFn:
    """Single-image loss with the score as auxiliary output, ready for ``jax.value_and_grad(has_aux=True)``.

    Args:
      score_fn: ``(variables, image float32 [H, W, 3] pixels) -> scalar``.
      margin: see :func:`quality_loss`.

    Returns:
      ``loss_fn(variables, image, target) -> (loss, score)``, both ``float32`` scalars.
    """

    def loss_fn(variables: Any, image: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
        score = jnp.asarray(score_fn(variables, image), jnp.float32).reshape(())
        return quality_loss(score, target, margin), score

    return loss_fn
