"""qcamo_jax.models.conv: same values and gradients as lax, and gradients XLA:CPU keeps fast inside loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from qcamo_jax.models import conv
from qcamo_jax.models.hub import init_random

NHWC_HWIO = conv.NHWC_HWIO


def _assert_same_loss(ours, ref, out, cot):
    """``vdot(out, cot)`` from two programs: equal up to float32 summation order.

    The two sums add the same products in different orders (XLA:CPU's YNNPACK products fuse the
    reduction differently), so the bound is relative to the sum of the products' magnitudes (the
    standard bound of a reordered float sum), not to the (possibly cancelling) sum itself.
    """
    scale = float(jnp.vdot(jnp.abs(out), jnp.abs(cot)))
    assert abs(float(ours) - float(ref)) <= 1e-6 * scale, (float(ours), float(ref), scale)


@pytest.mark.parametrize("strides, padding, dilation, kernel", [
    ((1, 1), "SAME", (1, 1), (3, 3)),
    ((2, 2), "VALID", (1, 1), (3, 3)),
    ((2, 2), "SAME", (1, 1), (1, 7)),
    ((1, 1), ((3, 3), (0, 0)), (1, 1), (7, 1)),
    ((1, 1), "SAME", (2, 2), (3, 3)),
    ((1, 1), "VALID", (1, 1), (3, 3)),   # unpadded stride 1: computed with one padded column, cropped
    ((1, 1), ((0, 0), (0, 0)), (2, 2), (3, 1)),
    ((1, 1), "SAME", (1, 1), (1, 1)),    # pointwise: a dot_general
])
def test_values_and_gradients_equal_lax(strides, padding, dilation, kernel):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 13, 11, 5)), jnp.float32)
    k = jnp.asarray(rng.normal(size=kernel + (5, 7)), jnp.float32)
    cot = jnp.asarray(rng.normal(size=lax.conv_general_dilated(
        x, k, strides, padding, rhs_dilation=dilation, dimension_numbers=NHWC_HWIO).shape), jnp.float32)

    def loss(fn):
        return lambda x, k: jnp.vdot(fn(x, k, strides, padding, rhs_dilation=dilation, dimension_numbers=NHWC_HWIO,
                                        precision="highest"), cot)

    ref = jax.value_and_grad(loss(lax.conv_general_dilated), argnums=(0, 1))(x, k)
    ours = jax.jit(jax.value_and_grad(loss(conv.conv_general_dilated), argnums=(0, 1)))(x, k)
    out = lax.conv_general_dilated(x, k, strides, padding, rhs_dilation=dilation, dimension_numbers=NHWC_HWIO)
    _assert_same_loss(ours[0], ref[0], out, cot)
    for a, b in zip(ours[1], ref[1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_other_layouts_fall_through_to_lax():
    x = jnp.ones((1, 3, 8, 8))
    k = jnp.ones((4, 3, 3, 3))
    spec = ("NCHW", "OIHW", "NCHW")
    np.testing.assert_array_equal(conv.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=spec),
                                  lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=spec))


def _loop_convolution_kernel_orders(model):
    """The kernel orders (``dim_labels``) of every convolution XLA:CPU compiles for a gradient inside a loop."""
    grad = lambda v, x: jax.grad(lambda y: model.apply(v, y).sum())(x)  # noqa: E731
    loop = lambda v, x: jax.lax.fori_loop(0, 2, lambda i, y: y - 1e-3 * grad(v, y), x)  # noqa: E731
    # 192x256: every feature map stays at least 3 pixels a side (XLA rewrites convolutions over 1x2
    # maps in other ways, unrelated to this).
    text = jax.jit(loop).lower(model.variables, jnp.zeros((1, 192, 256, 3))).compile().as_text()
    return [line.split("dim_labels=")[1].split(",")[0] for line in text.splitlines() if " convolution(" in line]


def test_gradient_inside_a_loop_compiles_to_canonical_convolutions():
    """XLA:CPU's fast (Eigen) convolutions need HWIO kernels; a lax.conv input gradient inside a loop had HWOI ones."""
    labels = _loop_convolution_kernel_orders(init_random("koncept512", {"variant": "keras", "size": "tiny"}))
    assert labels, "no convolution found in the compiled program"
    assert all(lab == "b01f_01io->b01f" for lab in labels), sorted(set(labels))


@pytest.mark.parametrize("padding", ["SAME", "VALID", ((0, 0), (0, 0))])
def test_pointwise_convolutions_are_products_with_the_same_values_and_gradients(padding):
    """1x1 / stride 1 runs as dot_general on CPU: no convolution left in the program, lax's values and gradients."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 9, 7, 6)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, 1, 6, 4)), jnp.float32)
    cot = jnp.asarray(rng.normal(size=(2, 9, 7, 4)), jnp.float32)

    def loss(fn):
        return lambda x, k: jnp.vdot(fn(x, k, (1, 1), padding, dimension_numbers=NHWC_HWIO, precision="highest"), cot)

    ref = jax.value_and_grad(loss(lax.conv_general_dilated), argnums=(0, 1))(x, k)
    ours_fn = jax.jit(jax.value_and_grad(loss(conv.conv_general_dilated), argnums=(0, 1)))
    ours = ours_fn(x, k)
    _assert_same_loss(ours[0], ref[0], lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=NHWC_HWIO), cot)
    for a, b in zip(ours[1], ref[1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    text = ours_fn.lower(x, k).as_text()
    assert "convolution" not in text and "dot_general" in text
    # Strided or padded 1x1 convolutions stay convolutions.
    strided = jax.jit(lambda x, k: conv.conv_general_dilated(x, k, (2, 2), "SAME", dimension_numbers=NHWC_HWIO))
    assert "convolution" in strided.lower(x, k).as_text()


def test_large_pointwise_kernel_transposed_first_same_gradient():
    """A kernel of TRANSPOSE_FIRST elements or more: its transpose is made apart (optimization barrier),
    the input gradient stays lax's."""
    cin, cout = 2048, conv.TRANSPOSE_FIRST // 2048
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(1, 2, 3, cin)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, 1, cin, cout)) * 0.02, jnp.float32)
    cot = jnp.asarray(rng.normal(size=(1, 2, 3, cout)), jnp.float32)

    def grad(fn):
        return jax.grad(lambda a: jnp.vdot(fn(a, k, (1, 1), "SAME", dimension_numbers=NHWC_HWIO, precision="highest"), cot))

    ours = jax.jit(grad(conv.conv_general_dilated))
    np.testing.assert_allclose(ours(x), grad(lax.conv_general_dilated)(x), rtol=1e-4, atol=1e-4)
    assert "optimization_barrier" in ours.lower(x).as_text()
