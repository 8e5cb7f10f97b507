"""Max pooling whose gradient XLA:CPU computes with elementwise work instead of ``select_and_scatter``.

Data contract: ``x`` is ``[N, H, W, C]`` (any float dtype); :func:`max_pool` returns
``[N, (H - k) // s + 1, (W - k) // s + 1, C]``, the 'valid' (unpadded) ``k x k`` max pool with stride
``s``, the same values as ``flax.linen.max_pool(x, (k, k), strides=(s, s), padding="VALID")``.

Why: JAX differentiates ``lax.reduce_window`` max pooling into ``select_and_scatter``, which XLA:CPU
runs slowly: InceptionResNetV2's four 3x3 / stride-2 max pools took 0.15 s of forward + input gradient
per 384x512 image on 2 cores (the stem's first, 189x253x64: 58 ms; PyTorch's ``max_pool2d`` backward:
about 20 ms), about a tenth of the whole KonCept512 gradient.

What: the forward pass is the elementwise maximum of the ``k * k`` strided views of ``x`` (one per
window offset). The custom VJP sends each output's cotangent to **the first window position, in
row-major order, that holds the maximum** - the rule of XLA's ``select_and_scatter`` with JAX's ``ge``
select and of PyTorch's ``max_pool2d`` (its argmax is the first maximum) - so ties (flat image regions,
ReLU zeros) get the same gradient as JAX's own rule, not a split one. Each view's share goes back to
the input by an interior-padded ``lax.pad`` (the transpose of a strided slice), and XLA fuses the
``k * k`` shares into one elementwise pass (58 ms -> 7 ms for the stem's pool above; values equal to
JAX's gradient up to the summation order where windows overlap).

Only on a CPU backend (``jax.default_backend()`` when traced), like :mod:`qcamo_jax.models.conv`:
elsewhere :func:`max_pool` is ``flax.linen.max_pool`` unchanged, so GPU programs stay those measured.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def max_pool(x: jax.Array, window: int = 3, stride: int = 2) -> jax.Array:
    """'Valid' ``window x window`` max pooling with stride ``stride`` over ``[N, H, W, C]``.

    Raises:
      ValueError: ``x`` is not 4-D or smaller than one window.
    """
    if x.ndim != 4 or x.shape[1] < window or x.shape[2] < window:
        raise ValueError(f"max_pool needs [N, H, W, C] with H, W >= {window}, got shape {x.shape}")
    if jax.default_backend() != "cpu":
        return nn.max_pool(x, (window, window), strides=(stride, stride), padding="VALID")
    return _max_pool(window, stride, x)


def _views(x: jax.Array, window: int, stride: int, out_hw: tuple[int, int]) -> list[jax.Array]:
    """The ``window ** 2`` strided views ``x[:, i::stride, j::stride]`` cut to the output size, row-major."""
    ho, wo = out_hw
    n, _, _, c = x.shape
    return [lax.slice(x, (0, i, j, 0), (n, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, c), (1, stride, stride, 1))
            for i in range(window) for j in range(window)]


def _out_hw(shape: tuple[int, ...], window: int, stride: int) -> tuple[int, int]:
    return (shape[1] - window) // stride + 1, (shape[2] - window) // stride + 1


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _max_pool(window: int, stride: int, x: jax.Array) -> jax.Array:
    return functools.reduce(jnp.maximum, _views(x, window, stride, _out_hw(x.shape, window, stride)))


def _max_pool_fwd(window, stride, x):
    out = _max_pool(window, stride, x)
    return out, (x, out)


def _max_pool_bwd(window, stride, residuals, cotangent):
    x, out = residuals
    ho, wo = out.shape[1], out.shape[2]
    zero = jnp.zeros((), cotangent.dtype)
    taken = jnp.zeros(out.shape, bool)
    dx = jnp.zeros(x.shape, cotangent.dtype)
    offsets = [(i, j) for i in range(window) for j in range(window)]
    for (i, j), view in zip(offsets, _views(x, window, stride, (ho, wo))):
        first = (view == out) & ~taken  # this offset holds the window's first maximum
        taken = taken | first
        share = jnp.where(first, cotangent, zero)
        # Transpose of the strided view: put share[a, b] back at x[i + stride * a, j + stride * b].
        config = ((0, 0, 0), (i, x.shape[1] - i - stride * (ho - 1) - 1, stride - 1),
                  (j, x.shape[2] - j - stride * (wo - 1) - 1, stride - 1), (0, 0, 0))
        dx = dx + lax.pad(share, zero, config)
    return (dx.astype(x.dtype),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
