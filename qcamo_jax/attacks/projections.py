"""Projections onto the attack's constraint set: a norm ball around the original image and the pixel box.

Data contract: ``x``, ``x0`` are ``float32 [H, W, 3]`` (one image; the attacks ``vmap``) in pixel units;
``eps`` is a scalar budget in pixel units: the L2 norm of the whole perturbation (``sqrt(sum d^2)``
over H*W*3 values, as in the paper, budget <= 2000) or the largest absolute pixel change (Linf).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def l2_norm(delta: jax.Array) -> jax.Array:
    """``||delta||_2`` over all elements, float32 scalar."""
    return jnp.sqrt(jnp.sum(jnp.square(delta)))


def linf_norm(delta: jax.Array) -> jax.Array:
    """``max |delta|`` over all elements, float32 scalar."""
    return jnp.max(jnp.abs(delta))


def distortion(delta: jax.Array, norm: str) -> jax.Array:
    """The perturbation size in the attack's norm."""
    if norm == "l2":
        return l2_norm(delta)
    if norm == "linf":
        return linf_norm(delta)
    raise ValueError(f"unknown norm {norm!r}; use 'l2' or 'linf'")


def dual_norm(g: jax.Array, norm: str) -> jax.Array:
    """The dual norm of a gradient (L2 for ``"l2"``, L1 for ``"linf"``): the first-order loss change per
    unit of distortion along the steepest direction, so ``L / dual_norm(dL/dx)`` is the distortion a
    linear model of ``L`` needs to reach 0."""
    if norm == "l2":
        return l2_norm(g)
    if norm == "linf":
        return jnp.sum(jnp.abs(g))
    raise ValueError(f"unknown norm {norm!r}; use 'l2' or 'linf'")


def project_ball(delta: jax.Array, eps: jax.Array, norm: str) -> jax.Array:
    """Closest point of ``{d : ||d|| <= eps}`` for L2 (radial shrink) or Linf (clipping)."""
    if norm == "linf":
        return jnp.clip(delta, -eps, eps)
    if norm == "l2":
        n = l2_norm(delta)
        factor = jnp.where(n > eps, eps / jnp.where(n > 0, n, 1.0), 1.0)
        return delta * factor
    raise ValueError(f"unknown norm {norm!r}; use 'l2' or 'linf'")


def project(x: jax.Array, x0: jax.Array, eps: jax.Array, norm: str, pixel_range: tuple[float, float]) -> jax.Array:
    """Project ``x`` onto the ``eps``-ball around ``x0`` and then onto the pixel box.

    Clipping to the box after the ball projection keeps ``x`` in the ball: ``x0`` is in the box, so
    clipping only moves coordinates towards ``x0`` and never increases ``|x - x0|`` element-wise.
    """
    lo, hi = pixel_range
    return jnp.clip(x0 + project_ball(x - x0, eps, norm), lo, hi)


def random_delta(key: jax.Array, shape: tuple[int, ...], eps: jax.Array, norm: str) -> jax.Array:
    """A random start drawn uniformly in the ``eps``-ball (Madry et al. 2018).

    Linf: uniform in ``[-eps, eps]`` per element. L2: uniform in the ball, i.e. a Gaussian direction
    scaled to radius ``eps * U^(1/d)`` (in high dimension this is almost on the sphere).
    """
    if norm == "linf":
        return jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0) * eps
    if norm == "l2":
        k_dir, k_rad = jax.random.split(key)
        direction = jax.random.normal(k_dir, shape, jnp.float32)
        direction = direction / l2_norm(direction)
        d = float(math.prod(shape))
        radius = eps * jax.random.uniform(k_rad, (), jnp.float32) ** (1.0 / d)
        return direction * radius
    raise ValueError(f"unknown norm {norm!r}; use 'l2' or 'linf'")
