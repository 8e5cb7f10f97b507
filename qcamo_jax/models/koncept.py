"""KonCept512 (Hosu et al., KonIQ-10k, IEEE TIP 2020) as a pure Flax module, in its two published variants.

Data contract: ``pixels`` is ``float [B, H, W, 3]`` RGB in pixel units [0, 255] (uint8 is accepted);
the module applies ``x / 127.5 - 1`` itself so that attacks work in pixel units; the output is
``float32 [B]``, a MOS-like score (about 1-100, higher = better quality). Inference mode: batch norms
read ``batch_stats``, dropout is the identity. The function is pure and differentiable with respect to
``pixels`` and works under ``jit``, ``vmap`` and ``grad``.

Variants (chosen by the converted file's metadata, see :mod:`qcamo_jax.models.convert`):

* ``keras`` - the original model of the KonIQ project (``koncep512-trained-model.h5``): Keras
  InceptionResNetV2 (batch norms without gamma) -> global average pooling -> head
  ``Dense(2048, relu) -> BN -> Dropout -> Dense(1024, relu) -> BN -> Dropout -> Dense(256, relu) -> BN ->
  Dropout -> Dense(1)`` (kuti ``fc_layers`` with ``batch_norm=2``; head BN epsilon 1e-3, with gamma).
* ``mediaeval`` - the PyTorch port shipped by the MediaEval 2020 Pixel Privacy task (``KonCept512.pth``):
  Cadene's InceptionResNetV2 (batch norms with gamma) -> ``AvgPool2d(8, count_include_pad=False)``
  (kept by ``children()[:-1]``) -> head ``Linear -> ReLU -> BatchNorm1d(eps 1e-5) -> Dropout`` x3 ->
  ``Linear(256, 1)``.

Sizes other than 384x512 (what the original models do when fed such an image):

* ``keras``: the network is fully convolutional and ends in a *global* average pool, so any size
  >= 75x75 gives a score; the score at another size is not the score of the resized image.
* ``mediaeval``: ``AvgPool2d(8)`` with stride 8 and no padding makes a 1x1 output only when the feature
  map is 8..15 pixels on each side (inputs of about 299..555 pixels), and then averages its **top-left
  8x8 window** only (at 384x512 the map is 10x14). Outside that range the original PyTorch model fails
  (the flattened features no longer have 1536 entries); this module raises ``ValueError`` at trace time.

``size="tiny"`` is a narrow, shallow stand-in (channels / 8, one residual block of each kind, input
96x128) with the same structure, for fast CPU tests. Its ``mediaeval`` pooling window is 1x1, so it
needs a 1x1 final map (inputs of 75..119 pixels a side): its input size is 80x96.
"""

from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp

from qcamo_jax.models.inception_resnet_v2 import FULL, TINY, BackboneConfig, InceptionResNetV2

VARIANTS = ("keras", "mediaeval")
SIZES = ("full", "tiny")

#: Hidden widths of the head (before ``width_div``).
HEAD_WIDTHS = (2048, 1024, 256)
#: Head batch-norm epsilon per variant (Keras BatchNormalization default; PyTorch BatchNorm1d default).
HEAD_BN_EPSILON = {"keras": 1e-3, "mediaeval": 1e-5}


class KonCept512(nn.Module):
    """KonCept512: ``float [B, H, W, 3]`` pixels in [0, 255] -> ``float32 [B]`` scores.

    Attributes:
      variant: ``"keras"`` or ``"mediaeval"`` (see module docstring).
      backbone: backbone size (:data:`~qcamo_jax.models.inception_resnet_v2.FULL` or ``TINY``).
      input_size: ``(H, W)`` the model was trained at.
      min_size: smallest ``(H, W)`` the architecture accepts.
      pool_window: ``mediaeval`` only: side of the top-left average-pool window on the final map.
      fused: the backbone's inference form (see :mod:`qcamo_jax.models.inception_resnet_v2`); its
        variables come from :func:`qcamo_jax.models.inference_form.fuse_koncept512`, never from a
        converter or a checkpoint.
    """

    variant: str = "keras"
    backbone: BackboneConfig = FULL
    input_size: tuple[int, int] = (384, 512)
    min_size: tuple[int, int] = (75, 75)
    pool_window: int = 8
    fused: bool = False

    @nn.compact
    def __call__(self, pixels: jax.Array) -> jax.Array:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown KonCept512 variant {self.variant!r}; expected one of {VARIANTS}")
        x = jnp.asarray(pixels, jnp.float32) / 127.5 - 1.0
        feats = InceptionResNetV2(self.backbone, bn_scale=self.variant == "mediaeval", fused=self.fused,
                                  name="backbone")(x)
        feats = pool(feats, self.variant, self.pool_window)
        for i, width in enumerate(HEAD_WIDTHS):
            feats = nn.relu(nn.Dense(self.backbone.ch(width), name=f"dense_{i}")(feats))
            feats = nn.BatchNorm(use_running_average=True, epsilon=HEAD_BN_EPSILON[self.variant], name=f"bn_{i}")(feats)
        return nn.Dense(1, name="dense_out")(feats)[:, 0]


def pool(feats: jax.Array, variant: str, window: int = 8) -> jax.Array:
    """Pool the final map ``[B, h, w, C] -> [B, C]`` the way each original model does.

    ``keras``: global average. ``mediaeval``: PyTorch ``AvgPool2d(window)`` (stride = window, no padding)
    followed by ``view(B, -1)``, which only yields ``C`` features when the output is 1x1, i.e.
    ``window <= h, w < 2 * window``; the mean is then over the top-left ``window x window`` corner.
    """
    if variant == "keras":
        return jnp.mean(feats, axis=(1, 2))
    h, w = feats.shape[1:3]
    if not (window <= h < 2 * window and window <= w < 2 * window):
        raise ValueError(
            f"the MediaEval KonCept512 pools its {h}x{w} feature map with AvgPool2d({window}), which gives "
            f"one feature vector only for maps of {window}..{2 * window - 1} pixels a side "
            "(inputs of about 299..555 pixels at full size)"
        )
    return jnp.mean(feats[:, :window, :window], axis=(1, 2))


def build(variant: str = "keras", size: str = "full") -> KonCept512:
    """The registered builder (``hub.ARCHITECTURES["koncept512"]``).

    Args:
      variant: ``"keras"`` (KonIQ ``.h5``) or ``"mediaeval"`` (MediaEval 2020 ``.pth``).
      size: ``"full"`` (the real network, input 384x512) or ``"tiny"`` (tests; input 96x128).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown KonCept512 variant {variant!r}; expected one of {VARIANTS}")
    if size == "full":
        min_size = (299, 299) if variant == "mediaeval" else (75, 75)
        return KonCept512(variant, FULL, (384, 512), min_size, 8)
    if size == "tiny":
        # The tiny MediaEval model pools a 1x1 window of a map that is 1x1 only for inputs of 75..119 pixels.
        return KonCept512(variant, TINY, (96, 128) if variant == "keras" else (80, 96), (75, 75), 1)
    raise ValueError(f"unknown KonCept512 size {size!r}; expected one of {SIZES}")


def count_params(variables) -> int:
    """Number of scalars in a variable tree (params and batch statistics, like Keras' count)."""
    return int(sum(x.size for x in jax.tree.leaves(variables)))
