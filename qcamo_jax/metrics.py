"""Distortion between an original and a modified image: L2, PSNR, SSIM (batched, JAX).

Data contract: images are ``[B, H, W, 3]`` (or ``[H, W, 3]`` for the ``*_one`` functions) pixels in
[0, 255], any numeric dtype (uint8 files or float attacks). Everything is computed in float32 in pixel
units: L2 is ``||x - y||_2`` over all H*W*3 values (the unit the paper's budgets use), PSNR uses a peak
of 255, SSIM is Wang et al. (IEEE TIP 2004) with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
K2 = 0.03, computed per colour channel on the valid region and averaged - the same convention as
``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255, channel_axis=-1)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

PEAK = 255.0


def l2_one(x: jax.Array, y: jax.Array) -> jax.Array:
    """L2 distance in pixel units between two ``[H, W, 3]`` images (scalar)."""
    d = jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32)
    return jnp.sqrt(jnp.sum(d * d))


def psnr_one(x: jax.Array, y: jax.Array) -> jax.Array:
    """PSNR in dB (peak 255) between two ``[H, W, 3]`` images; ``inf`` when they are equal."""
    d = jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32)
    mse = jnp.mean(d * d)
    return jnp.where(mse > 0, 10.0 * jnp.log10(PEAK**2 / jnp.where(mse > 0, mse, 1.0)), jnp.inf)


def _gaussian_kernel(size: int = 11, sigma: float = 1.5) -> jax.Array:
    r = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    k = jnp.exp(-(r**2) / (2 * sigma**2))
    return k / jnp.sum(k)


def _filter_valid(img: jax.Array, k: jax.Array) -> jax.Array:
    """Separable filter of ``[H, W]`` with 1-D kernel ``k``, valid region only."""
    img = jax.vmap(lambda row: jnp.convolve(row, k, mode="valid"))(img)
    return jax.vmap(lambda col: jnp.convolve(col, k, mode="valid"), in_axes=1, out_axes=1)(img)


def ssim_one(x: jax.Array, y: jax.Array, win: int = 11, sigma: float = 1.5) -> jax.Array:
    """Mean SSIM between two ``[H, W, C]`` images (pixels 0-255), averaged over channels (scalar)."""
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    k = _gaussian_kernel(win, sigma)
    c1 = (0.01 * PEAK) ** 2
    c2 = (0.03 * PEAK) ** 2

    def channel(a, b):
        f = lambda t: _filter_valid(t, k)
        mu_a, mu_b = f(a), f(b)
        saa = f(a * a) - mu_a**2
        sbb = f(b * b) - mu_b**2
        sab = f(a * b) - mu_a * mu_b
        s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
        return jnp.mean(s)

    return jnp.mean(jax.vmap(channel, in_axes=(2, 2))(x, y))


#: Batched versions: ``[B, H, W, 3]`` x2 -> ``[B]``.
l2 = jax.jit(jax.vmap(l2_one))
psnr = jax.jit(jax.vmap(psnr_one))
ssim = jax.jit(jax.vmap(ssim_one))
