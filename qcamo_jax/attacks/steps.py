"""Gradient variants as ``optax.GradientTransformation``s: they turn a loss gradient into a step direction.

The attack loops (:mod:`qcamo_jax.attacks.pgd`) do ``x <- project(x - alpha * direction)`` where
``direction`` is the output of a GradientTransformation applied to ``dL/dx``. A new variant (momentum,
Adam, any optax transform) is therefore one object in the attack config, not a change to the loop:

  >>> import optax
  >>> from qcamo_jax.attacks import PGDConfig, steps
  >>> mi_fgsm = PGDConfig(norm="linf", gradient=steps.mi_momentum(decay=1.0))       # MI-FGSM
  >>> adam_pgd = PGDConfig(norm="l2", gradient=optax.scale_by_adam())                 # Adam-PGD

By default the loop appends :func:`steepest_direction` for the attack's norm (``sign`` for Linf,
L2-normalisation for L2) after the user's transform, so ``alpha`` keeps its meaning in pixel units
whatever variant is used (``PGDConfig(normalize=False)`` turns this off).

All transforms act on one image's gradient ``float32 [H, W, 3]`` (the attacks ``vmap`` them), so every
norm below is per image.

References:
  Goodfellow et al., "Explaining and harnessing adversarial examples", ICLR 2015 (FGSM, sign).
  Madry et al., "Towards deep learning models resistant to adversarial attacks", ICLR 2018 (PGD).
  Dong et al., "Boosting adversarial attacks with momentum", CVPR 2018 (MI-FGSM).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

# Below this norm a gradient is treated as zero (no step) instead of being blown up to unit length.
_TINY = 1e-20


def _global_norm(tree, order: int) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    if order == 1:
        return sum(jnp.sum(jnp.abs(x)) for x in leaves)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves))


def _normalize(tree, order: int):
    norm = _global_norm(tree, order)
    inv = jnp.where(norm > _TINY, 1.0 / jnp.maximum(norm, _TINY), 0.0)
    return jax.tree.map(lambda x: x * inv, tree)


def sign_gradient() -> optax.GradientTransformation:
    """Element-wise ``sign``: the steepest-descent direction for the Linf norm (FGSM, I-FGSM, PGD-Linf)."""
    return optax.stateless(lambda updates, params=None: jax.tree.map(jnp.sign, updates))


def normalize_l2() -> optax.GradientTransformation:
    """``g / ||g||_2``: the steepest-descent direction for the L2 norm (a zero gradient stays zero)."""
    return optax.stateless(lambda updates, params=None: _normalize(updates, 2))


def normalize_l1() -> optax.GradientTransformation:
    """``g / ||g||_1`` (the normalisation MI-FGSM applies before accumulating)."""
    return optax.stateless(lambda updates, params=None: _normalize(updates, 1))


class MomentumState(NamedTuple):
    """State of :func:`mi_momentum`: the accumulated direction, same shape as the gradient."""

    velocity: optax.Updates


def mi_momentum(decay: float = 1.0) -> optax.GradientTransformation:
    """MI-FGSM momentum (Dong et al. 2018): ``v <- decay * v + g / ||g||_1``, outputs ``v``.

    Chain it with :func:`sign_gradient` (Linf, the paper's MI-FGSM) or :func:`normalize_l2` (L2); the
    attacks do that automatically unless ``PGDConfig(normalize=False)``.

    Args:
      decay: momentum factor ``mu`` (1.0 in the paper).
    """

    def init_fn(params):
        return MomentumState(jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        velocity = jax.tree.map(lambda v, g: decay * v + g, state.velocity, _normalize(updates, 1))
        return velocity, MomentumState(velocity)

    return optax.GradientTransformation(init_fn, update_fn)


def adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """Adam's rescaling (:func:`optax.scale_by_adam`), used as a direction; the norm step follows it."""
    return optax.scale_by_adam(b1=b1, b2=b2, eps=eps)


def steepest_direction(norm: str) -> optax.GradientTransformation:
    """The unit-size steepest-descent direction for an attack norm: ``"linf"`` -> sign, ``"l2"`` -> g/||g||."""
    if norm == "linf":
        return sign_gradient()
    if norm == "l2":
        return normalize_l2()
    raise ValueError(f"unknown norm {norm!r}; use 'l2' or 'linf'")


def direction_transform(
    norm: str, gradient: optax.GradientTransformation | None = None, normalize: bool = True
) -> optax.GradientTransformation:
    """``gradient`` (default: identity) followed, if ``normalize``, by :func:`steepest_direction` of ``norm``."""
    parts = [gradient] if gradient is not None else []
    if normalize:
        parts.append(steepest_direction(norm))
    if not parts:
        return optax.identity()
    return parts[0] if len(parts) == 1 else optax.chain(*parts)
