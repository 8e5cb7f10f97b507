"""InceptionResNetV2 backbone in Flax (NHWC), with the exact math of Keras applications and Cadene's port.

Data contract: ``x`` is ``float32 [B, H, W, 3]`` already normalised to [-1, 1] (the KonCept512 module in
:mod:`qcamo_jax.models.koncept` does that); the output is the ``conv_7b`` feature map
``float32 [B, h, w, 1536]`` (``[B, 10, 14, 1536]`` at 384x512). Inference only: batch norm reads
``batch_stats`` and nothing is updated.

The math, shared by ``keras.applications.InceptionResNetV2`` and Cadene's ``pretrainedmodels`` file:

* every ``conv2d_bn`` is a convolution without bias -> batch norm (epsilon 1e-3) -> ReLU. Keras builds
  the batch norm with ``scale=False`` (no gamma); Cadene's has a gamma. ``bn_scale`` picks one;
* stride-2 layers use 'valid' padding; stride-1 odd kernels use symmetric 'same' padding (Cadene pads
  explicitly, with the same result);
* the 3x3 average pool of ``mixed_5b`` excludes the padding from the mean (Keras ``padding="same"``
  average pooling and Cadene's ``count_include_pad=False``);
* residual blocks compute ``x + scale * conv(concat(branches))`` where ``conv`` is a 1x1 convolution
  *with* bias and no batch norm: block35 x10 (scale 0.17), block17 x20 (0.10), block8 x9 (0.20), then
  a last block8 with scale 1.0 and no ReLU.

**Inference form** (``fused=True``, built by :mod:`qcamo_jax.models.inference_form` from the
variables of the standard form): every batch norm is folded into the convolution before it (a
convolution *with* bias, no batch norm), and the first 1x1 convolutions of the branches that read the
same input (:data:`FAN_OUTS`) are one convolution, named ``fan_out``, whose output is split in the
order listed. Same function, fewer and larger kernels; it has no batch statistics to train, so
converters, checkpoints and training use the standard form.

Module names follow the Cadene port (``conv2d_1a``, ``mixed_5b``...) with residual blocks numbered like
Keras (``block35_1``...``block35_10``); the converters in :mod:`qcamo_jax.models.convert` map both weight
sources onto these names.

References:
  Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning",
  AAAI 2017.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from qcamo_jax.models import conv, pool

#: Batch-norm epsilon of every backbone batch norm (Keras default, "value found in tensorflow" in Cadene's).
BN_EPSILON = 1e-3


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """Size of the backbone: block repeats and a channel divisor (1 = the real InceptionResNetV2).

    Attributes:
      repeats: number of (block35, block17, block8) blocks before the final, linear block8
        (InceptionResNetV2: 10, 20, 9).
      width_div: every channel count is divided by this (at least 1 channel); 1 for the real network.
    """

    repeats: tuple[int, int, int] = (10, 20, 9)
    width_div: int = 1

    def ch(self, n: int) -> int:
        return max(1, n // self.width_div)


FULL = BackboneConfig()
#: A narrow, shallow variant for fast CPU tests (one block of each kind, channels / 8).
TINY = BackboneConfig(repeats=(1, 1, 1), width_div=8)

BLOCK_SCALES = {"block35": 0.17, "block17": 0.10, "block8": 0.20}


class ConvBN(nn.Module):
    """Convolution without bias -> batch norm (inference) -> optional ReLU (Keras ``conv2d_bn``).

    With ``fused=True`` (the inference form) the batch norm is folded into the convolution: a
    convolution with bias -> optional ReLU, parameters ``conv/kernel`` and ``conv/bias`` only.
    """

    features: int
    kernel: Sequence[int]
    strides: int = 1
    padding: str = "SAME"
    bn_scale: bool = False
    relu: bool = True
    fused: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(self.features, tuple(self.kernel), strides=self.strides, padding=self.padding, use_bias=self.fused,
                    conv_general_dilated=conv.conv_general_dilated, name="conv")(x)
        if not self.fused:
            x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, use_scale=self.bn_scale, name="bn")(x)
        return nn.relu(x) if self.relu else x


#: Name of the merged first 1x1 convolution of a block in the inference form.
FAN_OUT = "fan_out"


def fan_out(x: jax.Array, branches: Sequence[tuple[str, int]], bn_scale: bool, fused: bool) -> list[jax.Array]:
    """The first 1x1 ``ConvBN`` of several branches that read ``x``: ``[(name, features), ...]`` -> outputs.

    Call it inside a compact ``__call__``: the convolutions belong to the caller. Standard form: one
    ``ConvBN`` per branch, named as given. Inference form: one ``ConvBN`` named :data:`FAN_OUT` with
    all the features, in the order given, split afterwards (one product instead of several, and one
    input-gradient product instead of a sum of them).
    """
    if not fused:
        return [ConvBN(features, (1, 1), bn_scale=bn_scale, name=name)(x) for name, features in branches]
    y = ConvBN(sum(f for _, f in branches), (1, 1), fused=True, name=FAN_OUT)(x)
    outs, start = [], 0
    for _, features in branches:
        outs.append(y[..., start:start + features])
        start += features
    return outs


def _max_pool(x: jax.Array) -> jax.Array:
    return pool.max_pool(x, 3, 2)  # = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID"), faster gradient on CPU


class Mixed5b(nn.Module):
    cfg: BackboneConfig
    bn_scale: bool
    fused: bool = False

    @nn.compact
    def __call__(self, x):
        c, s, f = self.cfg.ch, self.bn_scale, self.fused
        b0, b1, b2 = fan_out(x, [(n, c(k)) for n, k in zip(FAN_OUTS["mixed_5b"], (96, 48, 64))], s, f)
        b1 = ConvBN(c(64), (5, 5), bn_scale=s, fused=f, name="branch1_1")(b1)
        b2 = ConvBN(c(96), (3, 3), bn_scale=s, fused=f, name="branch2_1")(b2)
        b2 = ConvBN(c(96), (3, 3), bn_scale=s, fused=f, name="branch2_2")(b2)
        b3 = nn.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME", count_include_pad=False)
        b3 = ConvBN(c(64), (1, 1), bn_scale=s, fused=f, name="branch3")(b3)
        return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class Mixed6a(nn.Module):
    cfg: BackboneConfig
    bn_scale: bool
    fused: bool = False

    @nn.compact
    def __call__(self, x):
        c, s, f = self.cfg.ch, self.bn_scale, self.fused
        b0 = ConvBN(c(384), (3, 3), strides=2, padding="VALID", bn_scale=s, fused=f, name="branch0")(x)
        b1 = ConvBN(c(256), (1, 1), bn_scale=s, fused=f, name="branch1_0")(x)
        b1 = ConvBN(c(256), (3, 3), bn_scale=s, fused=f, name="branch1_1")(b1)
        b1 = ConvBN(c(384), (3, 3), strides=2, padding="VALID", bn_scale=s, fused=f, name="branch1_2")(b1)
        return jnp.concatenate([b0, b1, _max_pool(x)], axis=-1)


class Mixed7a(nn.Module):
    cfg: BackboneConfig
    bn_scale: bool
    fused: bool = False

    @nn.compact
    def __call__(self, x):
        c, s, f = self.cfg.ch, self.bn_scale, self.fused
        b0, b1, b2 = fan_out(x, [(n, c(256)) for n in FAN_OUTS["mixed_7a"]], s, f)
        b0 = ConvBN(c(384), (3, 3), strides=2, padding="VALID", bn_scale=s, fused=f, name="branch0_1")(b0)
        b1 = ConvBN(c(288), (3, 3), strides=2, padding="VALID", bn_scale=s, fused=f, name="branch1_1")(b1)
        b2 = ConvBN(c(288), (3, 3), bn_scale=s, fused=f, name="branch2_1")(b2)
        b2 = ConvBN(c(320), (3, 3), strides=2, padding="VALID", bn_scale=s, fused=f, name="branch2_2")(b2)
        return jnp.concatenate([b0, b1, b2, _max_pool(x)], axis=-1)


#: Residual branches per block type: tuple of branches, each a tuple of (filters, kernel) convs.
BLOCK_BRANCHES = {
    "block35": (((32, (1, 1)),), ((32, (1, 1)), (32, (3, 3))), ((32, (1, 1)), (48, (3, 3)), (64, (3, 3)))),
    "block17": (((192, (1, 1)),), ((128, (1, 1)), (160, (1, 7)), (192, (7, 1)))),
    "block8": (((192, (1, 1)),), ((192, (1, 1)), (224, (1, 3)), (256, (3, 1)))),
}


def branch_name(branch: Sequence, i: int, j: int) -> str:
    """Name of convolution ``j`` of residual branch ``i`` (``branch0`` for a single-conv branch, as in Cadene's port)."""
    return f"branch{i}" if len(branch) == 1 else f"branch{i}_{j}"


#: Block (type or name) -> the ``ConvBN`` names that read the block's input through a 1x1 kernel, in
#: the order the inference form concatenates them (see :func:`fan_out`).
FAN_OUTS: dict[str, tuple[str, ...]] = {
    **{t: tuple(branch_name(b, i, 0) for i, b in enumerate(branches)) for t, branches in BLOCK_BRANCHES.items()},
    "mixed_5b": ("branch0", "branch1_0", "branch2_0"),
    "mixed_7a": ("branch0_0", "branch1_0", "branch2_0"),
}


class ResidualBlock(nn.Module):
    """``act(x + scale * conv1x1_bias(concat(branches(x))))``; branch ``i`` conv ``j`` is ``branch{i}_{j}``
    (``branch0`` for the single-conv first branch, as in Cadene's port). Every branch starts with a
    1x1 convolution of ``x`` (merged by :func:`fan_out` in the inference form)."""

    block_type: str
    scale: float
    cfg: BackboneConfig
    bn_scale: bool
    activation: bool = True
    fused: bool = False

    @nn.compact
    def __call__(self, x):
        branches = BLOCK_BRANCHES[self.block_type]
        firsts = fan_out(x, [(n, self.cfg.ch(b[0][0])) for n, b in zip(FAN_OUTS[self.block_type], branches)],
                         self.bn_scale, self.fused)
        outs = []
        for i, (branch, y) in enumerate(zip(branches, firsts)):
            for j, (filters, kernel) in enumerate(branch[1:], start=1):
                y = ConvBN(self.cfg.ch(filters), kernel, bn_scale=self.bn_scale, fused=self.fused,
                           name=branch_name(branch, i, j))(y)
            outs.append(y)
        up = nn.Conv(x.shape[-1], (1, 1), use_bias=True, conv_general_dilated=conv.conv_general_dilated,
                     name="conv")(jnp.concatenate(outs, axis=-1))
        x = x + self.scale * up
        return nn.relu(x) if self.activation else x


class InceptionResNetV2(nn.Module):
    """The backbone up to ``conv_7b``: ``[B, H, W, 3]`` in [-1, 1] -> ``[B, h, w, 1536 / width_div]``.

    Attributes:
      cfg: :data:`FULL` or :data:`TINY` (or any :class:`BackboneConfig`).
      bn_scale: batch norms have a gamma (Cadene / MediaEval port) or not (Keras applications).
      fused: the inference form (batch norms folded, first 1x1 convolutions merged; see the module
        docstring); its variables come from :func:`qcamo_jax.models.inference_form.fuse_koncept512`.
    """

    cfg: BackboneConfig = FULL
    bn_scale: bool = False
    fused: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c, s, f = self.cfg.ch, self.bn_scale, self.fused
        x = ConvBN(c(32), (3, 3), strides=2, padding="VALID", bn_scale=s, fused=f, name="conv2d_1a")(x)
        x = ConvBN(c(32), (3, 3), padding="VALID", bn_scale=s, fused=f, name="conv2d_2a")(x)
        x = ConvBN(c(64), (3, 3), bn_scale=s, fused=f, name="conv2d_2b")(x)
        x = _max_pool(x)
        x = ConvBN(c(80), (1, 1), padding="VALID", bn_scale=s, fused=f, name="conv2d_3b")(x)
        x = ConvBN(c(192), (3, 3), padding="VALID", bn_scale=s, fused=f, name="conv2d_4a")(x)
        x = _max_pool(x)
        x = Mixed5b(self.cfg, s, f, name="mixed_5b")(x)
        n35, n17, n8 = self.cfg.repeats
        for i in range(n35):
            x = ResidualBlock("block35", BLOCK_SCALES["block35"], self.cfg, s, fused=f, name=f"block35_{i + 1}")(x)
        x = Mixed6a(self.cfg, s, f, name="mixed_6a")(x)
        for i in range(n17):
            x = ResidualBlock("block17", BLOCK_SCALES["block17"], self.cfg, s, fused=f, name=f"block17_{i + 1}")(x)
        x = Mixed7a(self.cfg, s, f, name="mixed_7a")(x)
        for i in range(n8):
            x = ResidualBlock("block8", BLOCK_SCALES["block8"], self.cfg, s, fused=f, name=f"block8_{i + 1}")(x)
        x = ResidualBlock("block8", 1.0, self.cfg, s, activation=False, fused=f, name=f"block8_{n8 + 1}")(x)
        return ConvBN(c(1536), (1, 1), bn_scale=s, fused=f, name="conv2d_7b")(x)
