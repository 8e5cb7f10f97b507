"""qcamo_jax.models.pool: flax's max pool values, JAX's own gradient (ties included), no select_and_scatter."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qcamo_jax.models import pool


def _reference(x, window, stride):
    return nn.max_pool(x, (window, window), strides=(stride, stride), padding="VALID")


@pytest.mark.parametrize("shape, window, stride", [((2, 13, 11, 3), 3, 2), ((1, 12, 9, 2), 3, 2),
                                                   ((1, 8, 8, 4), 2, 2), ((1, 7, 10, 1), 3, 1)])
def test_values_and_gradients_equal_jax_with_ties(shape, window, stride):
    rng = np.random.default_rng(0)
    # ReLU-like zeros and a flat block: many windows whose maximum is held by several positions.
    x = np.maximum(rng.normal(size=shape), 0.0).astype(np.float32)
    x[:, 1:6, 2:7] = 0.75
    x = jnp.asarray(x)
    ref_out = _reference(x, window, stride)
    cot = jnp.asarray(rng.normal(size=ref_out.shape), jnp.float32)
    ours = jax.jit(lambda v: jax.vjp(lambda y: pool.max_pool(y, window, stride), v))
    out, vjp = ours(x)
    np.testing.assert_array_equal(out, ref_out)
    (want,) = jax.vjp(lambda y: _reference(y, window, stride), x)[1](cot)
    (got,) = vjp(cot)
    # Same positions get the cotangent (the first maximum of each window); sums differ only in order.
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert np.count_nonzero(np.asarray(got)) == np.count_nonzero(np.asarray(want))


def test_gradient_has_no_select_and_scatter_on_cpu():
    x = jnp.ones((1, 15, 17, 4))
    def ops(f):
        text = jax.jit(jax.grad(lambda y: f(y).sum())).lower(x).compile().as_text()
        return set(re.findall(r"= \S+ ([a-z][\w-]*)\(", text))

    assert {op for op in ops(lambda y: _reference(y, 3, 2)) if "scatter" in op}  # JAX's own rule scatters
    ours = ops(lambda y: pool.max_pool(y, 3, 2))
    assert not {op for op in ours if "scatter" in op}, sorted(ours)


def test_input_smaller_than_a_window_is_refused():
    with pytest.raises(ValueError, match="H, W >= 3"):
        pool.max_pool(jnp.ones((1, 2, 5, 1)), 3, 2)
