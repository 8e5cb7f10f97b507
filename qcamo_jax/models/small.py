"""``qcamo-small``: the compact no-reference quality model shipped as the embedded default.

This is **not** KonCept512. It is a five-stage CNN (0.33 G multiply-adds = 0.66 GFLOPs per 384x512 image, about 45x less
than KonCept512's InceptionResNetV2) trained in this repository on freely licensed photos with synthetic
distortions and full-reference (SSIM) labels; see ``weights/MODEL_CARD.md`` and
:mod:`qcamo_jax.training.train_default`. It exists so that every attack, quantizer and CLI command
runs out of the box on a model that really reacts to blur, noise and JPEG artefacts.

Data contract: ``pixels`` float ``[B, H, W, 3]`` RGB in [0, 255] (pixel units), any ``H, W`` at least
``min_size``; output ``float32 [B]`` scores on a 0-100 MOS-like scale (higher = better).

Design choices, all for the attacks that use this model as a white-box victim:
  * a BRISQUE-style MSCN luma channel next to RGB (local mean removed, divided by local contrast);
  * no batch normalisation, so there is no train/inference mode and no batch statistics (only a
    per-image LayerNorm of the pooled statistics);
  * smooth activations (SiLU) so input gradients are smooth rather than piecewise constant;
  * fully convolutional, then *multi-scale* global pooling (mean and log standard deviation of
    every stage), so any image size works and both fine (noise, JPEG ringing) and coarse (blur, contrast)
    statistics reach the head;
  * a KonCept-style MLP regression head (Dense -> activation, x2, then a linear output).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

#: Mean and scale of the training labels; the head predicts ``(score - SCORE_MEAN) / SCORE_SCALE``.
SCORE_MEAN = 50.0
SCORE_SCALE = 20.0


class SmallQualityNet(nn.Module):
    """Compact blind image quality regressor.

    Attributes:
      widths: channels of the five stride-2 3x3 convolution stages.
      head: hidden widths of the MLP head.
      input_size: ``(H, W)`` the model is meant to be used at (the MediaEval crop, 384x512).
      min_size: smallest ``(H, W)`` accepted (five stride-2 stages need at least 32 pixels; 64 keeps
        the last stage at 2x2 or more).
    """

    widths: Sequence[int] = (24, 32, 64, 96, 128)
    head: Sequence[int] = (256, 64)
    input_size: tuple[int, int] = (384, 512)
    min_size: tuple[int, int] = (64, 64)

    @nn.compact
    def __call__(self, pixels):
        """Scores ``pixels`` float ``[B, H, W, 3]`` in [0, 255] -> ``float32 [B]`` on a 0-100 scale."""
        pixels = jnp.asarray(pixels, jnp.float32)
        x = jnp.concatenate([pixels / 127.5 - 1.0, mscn(pixels)], axis=-1)
        pooled = []
        for i, width in enumerate(self.widths):
            x = nn.Conv(width, (3, 3), strides=(2, 2), padding="SAME", name=f"conv{i}")(x)
            x = nn.silu(x)
            if i >= 3:
                # Stride-1 residual refinement only on the two coarsest stages (1/16 and 1/32 of the
                # resolution), where it is cheap; finer stages stay single convs to keep FLOPs low.
                x = x + nn.silu(nn.Conv(width, (3, 3), padding="SAME", name=f"conv{i}_res")(x))
            mean = jnp.mean(x, axis=(1, 2))
            # log of the standard deviation: distortions change local energy by orders of magnitude
            # (noise multiplies it, blur divides it); the 1e-4 keeps the gradient finite on flat maps.
            log_std = 0.5 * jnp.log(jnp.var(x, axis=(1, 2)) + 1e-4)
            pooled += [mean, log_std]
        # Per-image LayerNorm of the pooled statistics (no batch statistics, same in training and use).
        h = nn.LayerNorm(name="pool_norm")(jnp.concatenate(pooled, axis=-1))
        for j, width in enumerate(self.head):
            h = nn.silu(nn.Dense(width, name=f"fc{j}")(h))
        out = nn.Dense(1, name="out")(h)[:, 0]
        return (SCORE_MEAN + SCORE_SCALE * out).astype(jnp.float32)


def _gaussian_blur(x, sigma: float = 7.0 / 6.0, radius: int = 3):
    """Separable Gaussian blur of ``x`` ``[B, H, W, 1]`` with reflect padding."""
    t = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    k = jnp.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = jnp.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="reflect")
    dn = ("NHWC", "HWIO", "NHWC")
    x = jax.lax.conv_general_dilated(x, k.reshape(-1, 1, 1, 1), (1, 1), "VALID", dimension_numbers=dn)
    return jax.lax.conv_general_dilated(x, k.reshape(1, -1, 1, 1), (1, 1), "VALID", dimension_numbers=dn)


def mscn(pixels, c: float = 1.0):
    """Mean-subtracted contrast-normalised luma (BRISQUE; Mittal et al., IEEE TIP 2012).

    ``(Y - mu) / (sigma + c)`` with local Gaussian mean and deviation (7x7, sigma 7/6), ``Y`` the BT.601
    luma in pixel units [0, 255] and ``c = 1`` as in BRISQUE. Natural images give near-Gaussian MSCN
    statistics that blur, noise and blocking change, which gives the CNN a direct handle on them.

    Args:
      pixels: float ``[B, H, W, 3]`` RGB in [0, 255].

    Returns:
      float ``[B, H, W, 1]``, roughly in [-3, 3].
    """
    y = (pixels @ jnp.array([0.299, 0.587, 0.114], jnp.float32))[..., None]
    mu = _gaussian_blur(y)
    var = jnp.maximum(_gaussian_blur(y * y) - mu * mu, 0.0)
    # sqrt(var + 1e-2): avoids the infinite derivative of sqrt at 0 on flat patches.
    return (y - mu) / (jnp.sqrt(var + 1e-2) + c)


def build(
    widths: Sequence[int] = (24, 32, 64, 96, 128),
    head: Sequence[int] = (256, 64),
    input_size: Sequence[int] = (384, 512),
) -> SmallQualityNet:
    """Builder registered as ``qcamo-small`` in :data:`qcamo_jax.models.hub.ARCHITECTURES`."""
    return SmallQualityNet(widths=tuple(widths), head=tuple(head), input_size=tuple(input_size))
