"""2-D convolution whose input gradient XLA:CPU can run with its fast (Eigen) kernels inside loops.

Why: the input gradient of an NHWC/HWIO convolution is itself a convolution whose kernel is read in
"HWOI" order (JAX's transpose rule swaps the kernel's feature axes). XLA:CPU runs only NHWC/HWIO
convolutions with its Eigen kernels and rewrites other orders into that one, but its rewriting pass
(``ConvCanonicalization``) visits the *entry* computation only. A gradient inside a ``lax.while_loop``
or ``fori_loop`` body, where every attack and quantizer of this package computes it, keeps the HWOI
convolutions and runs them with XLA's generic emitter: a KonCept512 forward + input gradient took
2.4x longer inside a loop than alone (4.83 s against 2.02 s, 2 images 384x512, 2 cores), while the
forward pass, whose convolutions are already HWIO, did not slow down (``benchmarks/probe_loop_overhead.py``).

What: :func:`conv_general_dilated` has the signature of :func:`jax.lax.conv_general_dilated` (Flax's
``nn.Conv(conv_general_dilated=...)`` hook) and computes exactly the same forward convolution. Its
custom VJP materialises the kernel with swapped feature axes (``HWOI`` array) and differentiates a
convolution that reads that array, so the input-gradient convolution JAX derives reads it in HWIO
order: canonical, with no rewrite needed, inside loops or not. The swap (with the spatial flip JAX's
rule adds) is one copy of the kernel per gradient, also inside loops: XLA does not hoist copies that
size out of a ``while`` body (KonCept512's attack makes 104 per step). Making them once per set of
weights was measured and gained nothing beyond noise (commit 3c1cbbc, benchmarks/RESULTS.md "Kernel
copies made once"). The kernel gradient follows JAX's own rule; it is
dead code, removed by XLA, whenever only the input is differentiated, as in every attack.

**1x1 convolutions are matrix products.** A stride-1, unpadded 1x1 convolution is
``x[N, H, W, C_in] @ w[C_in, C_out]``; on XLA:CPU the same product written as ``dot_general`` runs
(forward and input gradient) 2-3x faster than the convolution kernel for most of KonCept512's 1x1
shapes (e.g. 45x61x320 -> 32: 27 ms against 57 ms, forward + input gradient, 2 cores), and
InceptionResNetV2 spends about half its convolution time in 1x1 convolutions. Its gradient is a
product too, so no kernel-order issue arises in loops. The values agree with the convolution to float
rounding (a different summation order). The input gradient is the product with the transposed kernel;
XLA folds that transpose into the product, and XLA:CPU's product with a transposed right operand is
slow for large kernels: KonCept512's last one (2080 x 1536) took 23.9 ms, 5.7 ms with the transpose
made first (a separate 1.2 ms copy, kept apart by ``lax.optimization_barrier``), while for the kernels
below :data:`TRANSPOSE_FIRST` elements the folded product was as fast or faster
(``python benchmarks/conv_layers.py`` lists every shape).

**Unpadded stride-1 convolutions get one padded column.** XLA:CPU runs a stride-1 convolution with
no padding at all several times slower than the same convolution with some padding (measured with
its Eigen and its YNNPACK kernels alike): InceptionResNetV2's ``conv2d_2a`` (3x3, 32 -> 32 channels,
191x255, 'valid') took 64 ms forward + input gradient, 18 ms when computed with one zero column on the
right and the extra output column cropped (``conv2d_4a``: 55 -> 41 ms). The values are the same
(the extra column never reaches the kept outputs). Strided convolutions showed no such gap and are
left alone.

Only on a CPU backend (``jax.default_backend()`` when traced): elsewhere, and for anything but 2-D
NHWC/HWIO convolutions without input dilation or feature groups, it is
:func:`jax.lax.conv_general_dilated` unchanged. GPUs do not need it (cuDNN takes any kernel order and
XLA:GPU matches JAX's own gradient pattern to cuDNN's backward-data kernels; on an H200 a PGD step in
the loop cost what a lone gradient costs), so the GPU program stays the one measured there.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

#: The layout of every convolution of this package's models (Flax's default): NHWC images, HWIO kernels.
NHWC_HWIO = ("NHWC", "HWIO", "NHWC")


def _is_nhwc_hwio(dimension_numbers: Any) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return tuple(dimension_numbers) == ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
    return tuple(dimension_numbers) == NHWC_HWIO


def _hashable_padding(padding: Any) -> Any:
    return padding if isinstance(padding, str) else tuple(tuple(int(v) for v in p) for p in padding)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: Any,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """:func:`jax.lax.conv_general_dilated` with a loop-friendly input gradient (see the module docstring).

    Args:
      lhs: ``[N, H, W, C_in]`` images.
      rhs: ``[kh, kw, C_in, C_out]`` kernel.
      window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
        batch_group_count, precision, preferred_element_type: as in :func:`jax.lax.conv_general_dilated`.

    Returns:
      ``[N, H', W', C_out]``, the same values as :func:`jax.lax.conv_general_dilated`.
    """
    plain = (jax.default_backend() != "cpu" or lhs.ndim != 4 or not _is_nhwc_hwio(dimension_numbers) or feature_group_count != 1
             or batch_group_count != 1 or any(d != 1 for d in (lhs_dilation or (1, 1)))
             or preferred_element_type is not None)
    if plain:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                                        feature_group_count, batch_group_count, precision, preferred_element_type)
    if precision is None:
        # The precision in force now (e.g. a jax.default_matmul_precision context around the forward
        # pass), fixed for the backward pass too, which may be traced outside that context.
        precision = jax.config.jax_default_matmul_precision
    if _is_pointwise(rhs.shape, window_strides, padding):
        return _pointwise(precision, lhs, rhs[0, 0])
    strides, dilation = tuple(int(s) for s in window_strides), tuple(int(d) for d in (rhs_dilation or (1, 1)))
    if strides == (1, 1) and _no_padding(padding):
        # One zero column more, cropped again: see "Unpadded stride-1 convolutions" in the module docstring.
        out = _conv(strides, ((0, 0), (0, 1)), dilation, precision, lhs, rhs)
        return lax.slice_in_dim(out, 0, out.shape[2] - 1, axis=2)
    return _conv(strides, _hashable_padding(padding), dilation, precision, lhs, rhs)


def _no_padding(padding: Any) -> bool:
    return padding == "VALID" or (not isinstance(padding, str) and all(tuple(p) == (0, 0) for p in padding))


def _is_pointwise(kernel_shape: Sequence[int], strides: Sequence[int], padding: Any) -> bool:
    """A 1x1 kernel, stride 1, no padding: the convolution is a product over the channel axis."""
    unpadded = padding == "SAME" or _no_padding(padding)  # "SAME" pads nothing for a 1x1 kernel at stride 1
    return tuple(kernel_shape[:2]) == (1, 1) and tuple(int(s) for s in strides) == (1, 1) and unpadded


#: Kernels of at least this many elements (C_in x C_out) get their transpose made before the input
#: gradient's product instead of folded into it (see the module docstring).
TRANSPOSE_FIRST = 2**21


def _product(lhs, kernel, precision):
    return lax.dot_general(lhs, kernel, (((lhs.ndim - 1,), (0,)), ((), ())), precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _pointwise(precision, lhs, kernel):
    """``lhs [N, H, W, C_in] @ kernel [C_in, C_out]``: a 1x1 convolution as a product."""
    return _product(lhs, kernel, precision)


def _pointwise_fwd(precision, lhs, kernel):
    return _product(lhs, kernel, precision), (lhs, kernel)


def _pointwise_bwd(precision, residuals, cotangent):
    lhs, kernel = residuals
    transposed = jnp.transpose(kernel)
    if kernel.size >= TRANSPOSE_FIRST:
        transposed = lax.optimization_barrier(transposed)
    d_lhs = _product(cotangent, transposed, precision)
    # Only when the weights are differentiated (dead code in the attacks): sum over N, H, W.
    d_kernel = lax.dot_general(lhs, cotangent, (((0, 1, 2), (0, 1, 2)), ((), ())), precision=precision)
    return d_lhs, d_kernel


_pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


def _plain(strides, padding, dilation, precision, lhs, rhs, kernel_spec: str = "HWIO"):
    return lax.conv_general_dilated(lhs, rhs, strides, padding, rhs_dilation=dilation,
                                    dimension_numbers=("NHWC", kernel_spec, "NHWC"), precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _conv(strides, padding, dilation, precision, lhs, rhs):
    return _plain(strides, padding, dilation, precision, lhs, rhs)


def _conv_fwd(strides, padding, dilation, precision, lhs, rhs):
    return _plain(strides, padding, dilation, precision, lhs, rhs), (lhs, rhs)


def _conv_bwd(strides, padding, dilation, precision, residuals, cotangent):
    lhs, rhs = residuals
    swapped = jnp.swapaxes(rhs, 2, 3)  # [kh, kw, C_out, C_in]: the same kernel, read as HWOI below
    same_conv = lambda x: _plain(strides, padding, dilation, precision, x, swapped, kernel_spec="HWOI")  # noqa: E731
    (d_lhs,) = jax.linear_transpose(same_conv, jax.ShapeDtypeStruct(lhs.shape, lhs.dtype))(cotangent)
    kernel_conv = lambda k: _plain(strides, padding, dilation, precision, lhs, k)  # noqa: E731
    (d_rhs,) = jax.linear_transpose(kernel_conv, jax.ShapeDtypeStruct(rhs.shape, rhs.dtype))(cotangent)
    return d_lhs, d_rhs


_conv.defvjp(_conv_fwd, _conv_bwd)
