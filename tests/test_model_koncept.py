"""KonCept512 Flax module: shapes, counts, purity and transformations (tiny variant; full size via eval_shape)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import photos as P
from qcamo_jax.models import hub, koncept


@pytest.fixture(scope="module")
def tiny():
    return hub.load_model("tiny-random")


def test_full_size_counts_and_shapes():
    """455 weighted layers, 59,858,657 parameters (Keras count, moving statistics included)."""
    for variant, n in (("keras", 59_858_657), ("mediaeval", 59_888_929)):
        module = koncept.build(variant)
        assert module.input_size == (384, 512)
        shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 384, 512, 3)))
        assert koncept.count_params(shapes) == n
        out = jax.eval_shape(module.apply, shapes, jnp.zeros((2, 384, 512, 3)))
        assert out.shape == (2,) and out.dtype == jnp.float32
    backbone = jax.eval_shape(koncept.build("keras").init, jax.random.PRNGKey(0), jnp.zeros((1, 384, 512, 3)))
    assert koncept.count_params(backbone["params"]["backbone"]) + koncept.count_params(
        backbone["batch_stats"]["backbone"]) == 54_336_736
    # the Keras backbone has no batch-norm gamma, the MediaEval one has
    assert "scale" not in backbone["params"]["backbone"]["conv2d_1a"]["bn"]
    assert backbone["params"]["bn_0"]["scale"].shape == (2048,)


def test_tiny_scores_jit_vmap_grad(tiny):
    assert tiny.input_size == (96, 128) and tiny.min_size == (75, 75)
    x = P.photos((96, 128), ("astronaut", "chelsea", "coffee")).astype(np.float32)
    s = jax.jit(tiny.apply)(tiny.variables, x)
    assert s.shape == (3,) and s.dtype == jnp.float32
    assert np.ptp(np.asarray(s)) > 0  # image dependent
    one = jax.jit(jax.vmap(tiny.score_one, in_axes=(None, 0)))(tiny.variables, x)
    np.testing.assert_allclose(one, s, rtol=1e-5, atol=1e-5)
    g = jax.jit(jax.grad(lambda v, im: tiny.score_one(v, im), argnums=1))(tiny.variables, x[0])
    assert g.shape == (96, 128, 3) and np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 0
    # uint8 input gives the same as float pixels; normalisation is inside the module
    np.testing.assert_allclose(tiny.apply(tiny.variables, x.astype(np.uint8)), s, rtol=1e-5, atol=1e-5)


def test_gradient_matches_finite_difference(tiny):
    x = jnp.asarray(P.photo("coffee", (96, 128)), jnp.float32)
    f = jax.jit(lambda im: tiny.score_one(tiny.variables, im))
    g = jax.jit(jax.grad(lambda im: tiny.score_one(tiny.variables, im)))(x)
    d = jax.random.normal(jax.random.PRNGKey(0), x.shape)
    eps = 0.5
    fd = (f(x + eps * d) - f(x - eps * d)) / (2 * eps)
    np.testing.assert_allclose(fd, jnp.vdot(g, d), rtol=2e-2, atol=1e-4)


def test_mediaeval_pooling_window_and_size_limits():
    fmap = jnp.arange(10 * 14, dtype=jnp.float32).reshape(1, 10, 14, 1)
    np.testing.assert_allclose(koncept.pool(fmap, "mediaeval", 8)[0, 0], fmap[0, :8, :8, 0].mean())
    np.testing.assert_allclose(koncept.pool(fmap, "keras")[0, 0], fmap.mean())
    with pytest.raises(ValueError, match="AvgPool2d"):
        koncept.pool(jnp.zeros((1, 7, 14, 1)), "mediaeval", 8)
    with pytest.raises(ValueError, match="AvgPool2d"):
        koncept.pool(jnp.zeros((1, 10, 16, 1)), "mediaeval", 8)
    module = koncept.build("mediaeval")
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 384, 512, 3)))
    assert jax.eval_shape(module.apply, shapes, jnp.zeros((1, 299, 299, 3))).shape == (1,)
    with pytest.raises(ValueError, match="AvgPool2d"):
        jax.eval_shape(module.apply, shapes, jnp.zeros((1, 256, 320, 3)))


@pytest.mark.parametrize("variant", koncept.VARIANTS)
@pytest.mark.parametrize("size", koncept.SIZES)
def test_every_variant_and_size_scores_its_own_input_size(variant, size):
    """The declared input size is one the model accepts (the tiny MediaEval model once declared 96x128,
    whose 1x2 final map its 1x1 pooling window refuses)."""
    module = koncept.build(variant, size)
    x = jnp.zeros((1, *module.input_size, 3))
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
    assert jax.eval_shape(module.apply, shapes, x).shape == (1,)


def test_build_rejects_unknown_options():
    with pytest.raises(ValueError, match="variant"):
        koncept.build("caffe")
    with pytest.raises(ValueError, match="size"):
        koncept.build("keras", "huge")
