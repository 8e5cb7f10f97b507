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
``nn.Conv(conv_general_dilated=...)`` hook; the models use :class:`Conv`) and computes exactly the same
forward convolution. Its custom VJP writes the input gradient as the convolution it is: the
cotangent, dilated by the strides and padded by the transposed padding, convolved at stride 1 with
the kernel flipped along both spatial axes and with its feature axes swapped (:func:`grad_kernel`),
an HWIO array: canonical, with no rewrite needed, inside loops or not. The kernel gradient follows
JAX's own rule; it is dead code, removed by XLA, whenever only the input is differentiated, as in
every attack.

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

**The input gradient's kernels can be made once per set of weights.** The input-gradient convolution
reads the kernel spatially flipped with its feature axes swapped (``[kh, kw, C_out, C_in]``, HWIO), a
copy XLA makes on every call, and on every step of a loop (XLA does not hoist copies that size out of
a ``while`` body): for KonCept512, 104 such copies, about 50 ms of each forward + input gradient on 2
cores. :func:`with_grad_kernels` makes them once, into the variable collection :data:`GRAD_KERNELS`
(next to ``params``, the same tree of module paths; :class:`Conv` reads its entry when present and
derives it on the fly when not). They are *derived data*: change ``params`` and derive them again
(or drop the collection), or the input gradient uses the old kernels; their own gradient is zero.
Checkpoints never store them (:mod:`qcamo_jax.models.checkpoint`).

Only on a CPU backend (``jax.default_backend()`` when traced): elsewhere, and for anything but 2-D
NHWC/HWIO convolutions without input dilation or feature groups, it is
:func:`jax.lax.conv_general_dilated` unchanged. GPUs do not need it (cuDNN takes any kernel order and
XLA:GPU matches JAX's own gradient pattern to cuDNN's backward-data kernels; on an H200 a PGD step in
the loop cost what a lone gradient costs), so the GPU program stays the one measured there.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

#: The layout of every convolution of this package's models (Flax's default): NHWC images, HWIO kernels.
NHWC_HWIO = ("NHWC", "HWIO", "NHWC")

#: Variable collection of the input-gradient kernels (see the module docstring and :func:`with_grad_kernels`).
GRAD_KERNELS = "grad_kernels"


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
    *,
    grad_kernel: jax.Array | None = None,
) -> jax.Array:
    """:func:`jax.lax.conv_general_dilated` with a loop-friendly input gradient (see the module docstring).

    Args:
      lhs: ``[N, H, W, C_in]`` images.
      rhs: ``[kh, kw, C_in, C_out]`` kernel.
      window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
        batch_group_count, precision, preferred_element_type: as in :func:`jax.lax.conv_general_dilated`.
      grad_kernel: optional :func:`grad_kernel` of ``rhs`` (``[kh, kw, C_out, C_in]``), made once
        outside; used by the input gradient instead of deriving it again. Ignored where this function
        falls through to :func:`jax.lax.conv_general_dilated`.

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
    if grad_kernel is not None:
        grad_kernel = lax.stop_gradient(grad_kernel).astype(rhs.dtype)
    if _is_pointwise(rhs.shape, window_strides, padding):
        return _pointwise(precision, lhs, rhs[0, 0], None if grad_kernel is None else grad_kernel[0, 0])
    strides, dilation = tuple(int(s) for s in window_strides), tuple(int(d) for d in (rhs_dilation or (1, 1)))
    if strides == (1, 1) and _no_padding(padding):
        # One zero column more, cropped again: see "Unpadded stride-1 convolutions" in the module docstring.
        out = _conv(strides, ((0, 0), (0, 1)), dilation, precision, lhs, rhs, grad_kernel)
        return lax.slice_in_dim(out, 0, out.shape[2] - 1, axis=2)
    return _conv(strides, _hashable_padding(padding), dilation, precision, lhs, rhs, grad_kernel)


def grad_kernel(kernel: jax.Array) -> jax.Array:
    """The kernel of the input-gradient convolution: ``[kh, kw, C_in, C_out]`` -> ``[kh, kw, C_out, C_in]``.

    The kernel flipped along both spatial axes with its feature axes swapped (HWIO for a convolution
    from ``C_out`` to ``C_in`` channels); for a 1x1 kernel, ``[0, 0]`` is the transposed matrix.
    The rule is the transpose of a convolution (Dumoulin and Visin, "A guide to convolution
    arithmetic for deep learning", 2016, section 4; JAX's ``_conv_general_dilated_transpose_lhs``).
    """
    return lax.rev(jnp.swapaxes(kernel, 2, 3), (0, 1))


def with_grad_kernels(variables: Mapping[str, Any]) -> dict[str, Any]:
    """``variables`` plus the collection :data:`GRAD_KERNELS`: :func:`grad_kernel` of every 4-D ``kernel``.

    Args:
      variables: a Flax variable tree with ``params``; every ``kernel`` leaf with 4 axes (a 2-D
        convolution's HWIO kernel) gets an entry at the same path.

    Returns:
      A new dict (the input is not modified); the same tree without change where the backend is not
      a CPU (there the convolutions are :func:`jax.lax.conv_general_dilated`'s and read no entry) or
      no kernel has 4 axes. On KonCept512 the collection is as large as its convolution kernels
      (about 200 MiB in float32).
    """
    out = {k: v for k, v in variables.items() if k != GRAD_KERNELS}
    if jax.default_backend() != "cpu":
        return out

    def derive(tree):
        sub = {}
        for name, value in tree.items():
            if isinstance(value, Mapping):
                found = derive(value)
                if found:
                    sub[name] = found
            elif name == "kernel" and jnp.ndim(value) == 4:
                sub[name] = _grad_kernel_jit(value)
        return sub

    kernels = derive(variables.get("params", {}))
    if kernels:
        out[GRAD_KERNELS] = kernels
    return out


_grad_kernel_jit = jax.jit(grad_kernel)


class Conv(nn.Module):
    """A 2-D NHWC convolution with an HWIO ``kernel`` (and a ``bias``), parameters as :class:`flax.linen.Conv`'s.

    Same parameter names, shapes and initialisers as ``nn.Conv(features, kernel_size, strides,
    padding, use_bias)`` (so checkpoints and converters see the same tree), computed by
    :func:`conv_general_dilated`, which reads this module's :data:`GRAD_KERNELS` entry when the
    variables have one. Input ``[N, H, W, C_in]`` -> ``[N, H', W', features]``; the input and the
    parameters are promoted to a common dtype, as in Flax.
    """

    features: int
    kernel_size: tuple[int, int]
    strides: int | tuple[int, int] = 1
    padding: str | Sequence[tuple[int, int]] = "SAME"
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (*self.kernel_size, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,)) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias)
        derived = self.get_variable(GRAD_KERNELS, "kernel") if self.has_variable(GRAD_KERNELS, "kernel") else None
        strides = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)
        y = conv_general_dilated(x, kernel, strides, self.padding, dimension_numbers=NHWC_HWIO, grad_kernel=derived)
        return y if bias is None else y + bias


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
def _pointwise(precision, lhs, kernel, transposed):
    """``lhs [N, H, W, C_in] @ kernel [C_in, C_out]``: a 1x1 convolution as a product.

    ``transposed`` is ``kernel.T`` made once outside, or None to make it in the backward pass.
    """
    return _product(lhs, kernel, precision)


def _pointwise_fwd(precision, lhs, kernel, transposed):
    return _product(lhs, kernel, precision), (lhs, kernel, transposed)


def _pointwise_bwd(precision, residuals, cotangent):
    lhs, kernel, transposed = residuals
    if transposed is None:
        transposed = jnp.transpose(kernel)
        if kernel.size >= TRANSPOSE_FIRST:
            transposed = lax.optimization_barrier(transposed)
    d_lhs = _product(cotangent, transposed, precision)
    # Only when the weights are differentiated (dead code in the attacks): sum over N, H, W.
    d_kernel = lax.dot_general(lhs, cotangent, (((0, 1, 2), (0, 1, 2)), ((), ())), precision=precision)
    return d_lhs, d_kernel, _zero_like(transposed)


def _zero_like(value):
    return None if value is None else jnp.zeros_like(value)


_pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


def _plain(strides, padding, dilation, precision, lhs, rhs):
    return lax.conv_general_dilated(lhs, rhs, strides, padding, rhs_dilation=dilation,
                                    dimension_numbers=NHWC_HWIO, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _conv(strides, padding, dilation, precision, lhs, rhs, flipped):
    """The convolution; ``flipped`` is :func:`grad_kernel` of ``rhs`` made outside, or None."""
    return _plain(strides, padding, dilation, precision, lhs, rhs)


def _conv_fwd(strides, padding, dilation, precision, lhs, rhs, flipped):
    return _plain(strides, padding, dilation, precision, lhs, rhs), (lhs, rhs, flipped)


def _transposed_padding(in_size: int, out_size: int, k: int, stride: int, dilation: int, lo: int) -> tuple[int, int]:
    """Padding of the input-gradient convolution along one axis (the transpose of a convolution: Dumoulin
    and Visin 2016, section 4; the same numbers as JAX's ``_conv_general_vjp_lhs_padding``)."""
    k_dilated = (k - 1) * dilation + 1
    before = k_dilated - 1 - lo
    return before, in_size + k_dilated - 1 - ((out_size - 1) * stride + 1) - before


def _input_gradient(strides, padding, dilation, precision, cotangent, lhs_shape, flipped):
    """``d(vdot(conv(lhs), cotangent)) / d lhs``: a stride-1 convolution of the cotangent, dilated by the
    strides, with the flipped, swapped kernel, HWIO (canonical for XLA:CPU inside loops too)."""
    kh, kw = flipped.shape[:2]
    if isinstance(padding, str):
        eff = [(k - 1) * d + 1 for k, d in zip((kh, kw), dilation)]
        padding = lax.padtype_to_pads(lhs_shape[1:3], eff, strides, padding)
    pads = [_transposed_padding(lhs_shape[1 + i], cotangent.shape[1 + i], (kh, kw)[i], strides[i], dilation[i], padding[i][0])
            for i in range(2)]
    return lax.conv_general_dilated(cotangent, flipped, (1, 1), pads, lhs_dilation=strides, rhs_dilation=dilation,
                                    dimension_numbers=NHWC_HWIO, precision=precision)


def _conv_bwd(strides, padding, dilation, precision, residuals, cotangent):
    lhs, rhs, flipped = residuals
    d_lhs = _input_gradient(strides, padding, dilation, precision, cotangent, lhs.shape,
                            grad_kernel(rhs) if flipped is None else flipped)
    # Only when the weights are differentiated (dead code in the attacks): JAX's own rule.
    kernel_conv = lambda k: _plain(strides, padding, dilation, precision, lhs, k)  # noqa: E731
    (d_rhs,) = jax.linear_transpose(kernel_conv, jax.ShapeDtypeStruct(rhs.shape, rhs.dtype))(cotangent)
    return d_lhs, d_rhs, _zero_like(flipped)


_conv.defvjp(_conv_fwd, _conv_bwd)
