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


@pytest.mark.parametrize("strides, padding, dilation, kernel", [
    ((1, 1), "SAME", (1, 1), (3, 3)),
    ((2, 2), "VALID", (1, 1), (3, 3)),
    ((2, 2), "SAME", (1, 1), (1, 7)),
    ((2, 2), "SAME", (1, 1), (4, 4)),    # even kernel, stride 2: uneven 'SAME' padding
    ((1, 1), ((3, 2), (0, 1)), (1, 1), (7, 1)),
    ((1, 1), "SAME", (2, 2), (3, 3)),
    ((1, 1), "VALID", (1, 1), (3, 3)),
    ((2, 2), "SAME", (1, 1), (1, 1)),    # strided 1x1: a convolution, not a product
    ((1, 1), "SAME", (1, 1), (1, 1)),    # pointwise: a product with the transposed kernel
])
def test_input_gradient_from_a_kernel_made_outside_equals_lax(strides, padding, dilation, kernel):
    """grad_kernel= (the flipped, swapped kernel made once) gives lax's input gradient; 13x11 inputs make
    strided convolutions drop rows, which the transposed padding must restore as zeros."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(2, 13, 11, 5)), jnp.float32)
    k = jnp.asarray(rng.normal(size=kernel + (5, 7)), jnp.float32)
    out = lax.conv_general_dilated(x, k, strides, padding, rhs_dilation=dilation, dimension_numbers=NHWC_HWIO)
    cot = jnp.asarray(rng.normal(size=out.shape), jnp.float32)

    def grad(fn, **kw):
        return jax.grad(lambda a: jnp.vdot(fn(a, k, strides, padding, rhs_dilation=dilation, dimension_numbers=NHWC_HWIO,
                                              precision="highest", **kw), cot))

    ours = jax.jit(grad(conv.conv_general_dilated, grad_kernel=conv.grad_kernel(k)))(x)
    np.testing.assert_allclose(ours, grad(lax.conv_general_dilated)(x), rtol=1e-5, atol=1e-5)


def _compiled_loop(model, variables):
    grad = lambda v, x: jax.grad(lambda y: model.apply(v, y).sum())(x)  # noqa: E731
    loop = lambda v, x: jax.lax.fori_loop(0, 2, lambda i, y: y - 1e-3 * grad(v, y), x)  # noqa: E731
    # 192x256 as above: over maps smaller than a kernel XLA swaps a convolution's operands, with reverses.
    return jax.jit(loop).lower(variables, jnp.zeros((1, 192, 256, 3))).compile().as_text()


def test_models_read_grad_kernels_made_once():
    """A model's variables carry the input-gradient kernels (CPU): the gradient is the same as without them,
    and the gradient in a loop makes no kernel copies (without them it flips every kernel on every step)."""
    model = init_random("koncept512", {"variant": "keras", "size": "tiny"})
    assert conv.GRAD_KERNELS in model.variables
    plain = {k: v for k, v in model.variables.items() if k != conv.GRAD_KERNELS}
    x = jnp.asarray(np.random.default_rng(4).uniform(0, 255, (2, 96, 128, 3)), jnp.float32)
    grad = jax.jit(jax.grad(lambda v, x: model.apply(v, x).sum(), argnums=1))
    np.testing.assert_allclose(grad(model.variables, x), grad(plain, x), rtol=1e-5, atol=1e-6 * float(jnp.abs(grad(plain, x)).max()))
    assert " reverse(" not in _compiled_loop(model, model.variables)
    assert " reverse(" in _compiled_loop(model, plain)


def test_grad_kernels_are_derived_again_never_stored(tmp_path):
    """with_grad_kernels replaces an old collection and leaves its input alone; checkpoints do not store it."""
    from qcamo_jax.models import checkpoint

    model = init_random("koncept512", {"variant": "keras", "size": "tiny"})
    params = model.variables["params"]
    changed = jax.tree.map(lambda a: a * 2.0, params)
    stale = {**model.variables, "params": changed}
    fresh = conv.with_grad_kernels(stale)
    assert stale[conv.GRAD_KERNELS] is model.variables[conv.GRAD_KERNELS]  # the input is not modified
    path = ("backbone", "conv2d_1a", "conv", "kernel")
    node_p, node_g = changed, fresh[conv.GRAD_KERNELS]
    for key in path:
        node_p, node_g = node_p[key], node_g[key]
    np.testing.assert_array_equal(node_g, conv.grad_kernel(node_p))
    checkpoint.save(tmp_path / "m.safetensors", fresh, dict(model.metadata))
    flat, _ = checkpoint.load_raw(tmp_path / "m.safetensors")
    assert flat and not any(k.startswith(conv.GRAD_KERNELS) for k in flat)
