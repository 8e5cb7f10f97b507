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
  * no batch normalisation, so there is no train/inference mode and no batch statistics (the pooled
    statistics are standardised with fixed, data-initialised per-feature constants);
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

from qcamo_jax.models import conv

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

    def setup(self):
        self.convs = [nn.Conv(w, (3, 3), strides=(2, 2), padding="SAME", conv_general_dilated=conv.conv_general_dilated,
                              name=f"conv{i}") for i, w in enumerate(self.widths)]
        # Stride-1 residual refinement only on the two coarsest stages (1/16 and 1/32 of the
        # resolution), where it is cheap; finer stages stay single convs to keep FLOPs low.
        self.res = {i: nn.Conv(self.widths[i], (3, 3), padding="SAME", conv_general_dilated=conv.conv_general_dilated,
                               name=f"conv{i}_res") for i in range(3, len(self.widths))}
        n_feat = 2 * sum(self.widths) + N_NSS_FEATURES
        # Per-feature standardisation of the pooled statistics. Initialised from training data by
        # :func:`standardise_from_data` (data-dependent init): the image-to-image variation of raw
        # pooled statistics is tiny compared with their offsets, which otherwise stalls training.
        self.feat_mean = self.param("feat_mean", nn.initializers.zeros, (n_feat,))
        self.feat_inv_std = self.param("feat_inv_std", nn.initializers.ones, (n_feat,))
        self.fcs = [nn.Dense(w, name=f"fc{j}") for j, w in enumerate(self.head)]
        self.out = nn.Dense(1, name="out")

    def features(self, pixels):
        """Pooled statistics ``float32 [B, 2 * sum(widths) + N_NSS_FEATURES]`` before standardisation."""
        pixels = jnp.asarray(pixels, jnp.float32)
        x = jnp.concatenate([pixels / 127.5 - 1.0, mscn(pixels)], axis=-1)
        pooled = []
        for i, conv in enumerate(self.convs):
            x = nn.silu(conv(x))
            if i in self.res:
                x = x + nn.silu(self.res[i](x))
            mean = jnp.mean(x, axis=(1, 2))
            # log of the standard deviation: distortions change local energy by orders of magnitude
            # (noise multiplies it, blur divides it); the 1e-4 keeps the gradient finite on flat maps.
            log_std = 0.5 * jnp.log(jnp.var(x, axis=(1, 2)) + 1e-4)
            pooled += [mean, log_std]
        return jnp.concatenate(pooled + [nss_features(pixels)], axis=-1)

    def __call__(self, pixels):
        """Scores ``pixels`` float ``[B, H, W, 3]`` in [0, 255] -> ``float32 [B]`` on a 0-100 scale."""
        h = (self.features(pixels) - self.feat_mean) * self.feat_inv_std
        for fc in self.fcs:
            h = nn.silu(fc(h))
        out = self.out(h)[:, 0]
        return (SCORE_MEAN + SCORE_SCALE * out).astype(jnp.float32)


N_NSS_FEATURES = 3 * 9 + 4


def _log(x, eps=1e-4):
    return jnp.log(x + eps)


def nss_features(pixels):
    """Hand-designed natural-scene statistics (BRISQUE-like), differentiable: ``float32 [B, 31]``.

    At three scales (full, 1/2, 1/4 by 2x2 average pooling) of the luma: log variance, mean absolute
    value and log kurtosis proxy of the MSCN coefficients, the mean of their horizontal / vertical /
    diagonal neighbour products (structure that noise destroys and blur exaggerates), log local
    contrast and log gradient energy; then 8x8 JPEG blockiness (log ratio of luma jumps across block
    boundaries to jumps inside blocks), log luma contrast, mean luma and mean chroma (saturation).
    These make the regression head learn quickly from little data; the CNN statistics refine them.
    """
    rgb = jnp.asarray(pixels, jnp.float32)
    y = (rgb @ jnp.array([0.299, 0.587, 0.114], jnp.float32))[..., None]
    feats = []
    for scale in range(3):
        if scale:
            b, h, w, _ = y.shape
            y = y[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, 1).mean(axis=(2, 4))
        m, sigma = _mscn_and_sigma(y)
        m2 = jnp.mean(m * m, axis=(1, 2, 3))
        feats += [
            _log(m2),
            jnp.mean(jnp.sqrt(m * m + 1e-6), axis=(1, 2, 3)),
            _log(jnp.mean(m**4, axis=(1, 2, 3))) - 2 * _log(m2),
            jnp.mean(m[:, :, 1:] * m[:, :, :-1], axis=(1, 2, 3)),
            jnp.mean(m[:, 1:] * m[:, :-1], axis=(1, 2, 3)),
            jnp.mean(m[:, 1:, 1:] * m[:, :-1, :-1], axis=(1, 2, 3)),
            _log(jnp.mean(sigma, axis=(1, 2, 3)), 1.0),
            _log(jnp.mean((y[:, :, 1:] - y[:, :, :-1]) ** 2, axis=(1, 2, 3)), 1e-2),
            _log(jnp.mean((y[:, 1:] - y[:, :-1]) ** 2, axis=(1, 2, 3)), 1e-2),
        ]
    y0 = (rgb @ jnp.array([0.299, 0.587, 0.114], jnp.float32))
    dh = jnp.abs(y0[:, :, 1:] - y0[:, :, :-1])  # jump between column j and j+1
    dv = jnp.abs(y0[:, 1:] - y0[:, :-1])
    on_h = (jnp.arange(dh.shape[2]) % 8) == 7
    on_v = (jnp.arange(dv.shape[1]) % 8) == 7
    across = jnp.mean(jnp.where(on_h[None, None], dh, 0.0), axis=(1, 2)) / jnp.mean(on_h) + jnp.mean(
        jnp.where(on_v[None, :, None], dv, 0.0), axis=(1, 2)) / jnp.mean(on_v)
    inside = jnp.mean(jnp.where(on_h[None, None], 0.0, dh), axis=(1, 2)) / jnp.mean(~on_h) + jnp.mean(
        jnp.where(on_v[None, :, None], 0.0, dv), axis=(1, 2)) / jnp.mean(~on_v)
    chroma = rgb - y0[..., None]
    feats += [
        _log(across + 0.1) - _log(inside + 0.1),
        _log(jnp.var(y0, axis=(1, 2)), 1.0),
        jnp.mean(y0, axis=(1, 2)) / 255.0,
        jnp.mean(jnp.sqrt(jnp.sum(chroma * chroma, axis=-1) + 1e-2), axis=(1, 2)) / 255.0,
    ]
    return jnp.stack(feats, axis=-1)


def standardise_from_data(module: "SmallQualityNet", params, pixels):
    """Set ``feat_mean`` / ``feat_inv_std`` to the statistics of the pooled features of ``pixels``.

    Args:
      module: the model.
      params: its ``params`` tree (returned updated, not modified in place).
      pixels: float ``[N, H, W, 3]`` training crops in [0, 255] (a few dozen suffice).
    """
    feats = module.apply({"params": params}, pixels, method=module.features)
    params = dict(params)
    params["feat_mean"] = jnp.mean(feats, axis=0)
    params["feat_inv_std"] = 1.0 / (jnp.std(feats, axis=0) + 1e-3)
    return params


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
    return _mscn_and_sigma(y, c)[0]


def _mscn_and_sigma(y, c: float = 1.0):
    """MSCN coefficients and local deviation of a luma batch ``[B, H, W, 1]`` in pixel units."""
    mu = _gaussian_blur(y)
    var = jnp.maximum(_gaussian_blur(y * y) - mu * mu, 0.0)
    # sqrt(var + 1e-2): avoids the infinite derivative of sqrt at 0 on flat patches.
    sigma = jnp.sqrt(var + 1e-2)
    return (y - mu) / (sigma + c), sigma


def build(
    widths: Sequence[int] = (24, 32, 64, 96, 128),
    head: Sequence[int] = (256, 64),
    input_size: Sequence[int] = (384, 512),
) -> SmallQualityNet:
    """Builder registered as ``qcamo-small`` in :data:`qcamo_jax.models.hub.ARCHITECTURES`."""
    return SmallQualityNet(widths=tuple(widths), head=tuple(head), input_size=tuple(input_size))
