"""Spatial quantizer (Bonnet, Furon, Bas 2020) on real photos with a small CNN score."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import photos
from qcamo_jax.quantize import spatial


class ToyScore(nn.Module):
    """A small CNN mapping pixels [B, H, W, 3] in [0, 255] to a score around 50 (test stand-in)."""

    @nn.compact
    def __call__(self, x):
        x = x / 127.5 - 1.0
        x = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
        x = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
        x = jnp.mean(x, axis=(1, 2))
        return 50.0 + 40.0 * jnp.tanh(nn.Dense(1)(x)[:, 0])


def toy_model(size=(32, 48)):
    module = ToyScore()
    variables = module.init(jax.random.PRNGKey(1), jnp.zeros((1, *size, 3)))
    score_fn = lambda v, img: module.apply(v, img[None])[0]
    return score_fn, variables


def float_attack(score_fn, variables, originals, targets, steps=150, step=1.0, budget=1000.0, overshoot=0.1):
    """Minimal L2 PGD on the float image (the test's own, independent of qcamo_jax.attacks).

    Each image stops moving once its score is below ``target - overshoot``.
    """

    def one(x0, t):
        def body(_, x):
            s, g = jax.value_and_grad(lambda y: score_fn(variables, y))(x)
            x_new = x - step * g / (jnp.linalg.norm(g) + 1e-12)
            d = x_new - x0
            d = d * jnp.minimum(1.0, budget / (jnp.linalg.norm(d) + 1e-12))
            return jnp.where(s < t - overshoot, x, jnp.clip(x0 + d, 0, 255))

        return jax.lax.fori_loop(0, steps, body, x0)

    return jax.jit(jax.vmap(one))(originals.astype(jnp.float32), targets)


@pytest.fixture(scope="module")
def setup():
    score_fn, variables = toy_model()
    originals = photos.photos((32, 48), names=("astronaut", "chelsea", "coffee", "rocket"))
    clean = jax.vmap(lambda x: score_fn(variables, x))(originals.astype(jnp.float32))
    targets = clean - 1.0  # T relative to each image's own score (the model is random)
    adv = float_attack(score_fn, variables, originals, targets)
    return score_fn, variables, originals, np.asarray(adv), np.asarray(targets)


def test_output_is_floor_or_ceil_and_score_is_true(setup):
    score_fn, variables, originals, adv, targets = setup
    q, res = jax.jit(lambda o, a, t: spatial.quantize_spatial(score_fn, variables, o, a, t))(originals, adv, targets)
    q = np.asarray(q)
    assert q.dtype == np.uint8 and q.shape == originals.shape
    assert np.all((q == np.floor(adv)) | (q == np.ceil(adv)))
    true = np.asarray(jax.vmap(lambda x: score_fn(variables, x))(q.astype(np.float32)))
    np.testing.assert_allclose(np.asarray(res.score), true, atol=1e-4)
    assert np.all(np.asarray(res.success) == (true < targets))
    # The float attack reached its target on every image, so the quantizer must too.
    adv_scores = np.asarray(jax.vmap(lambda x: score_fn(variables, x))(jnp.asarray(adv)))
    assert np.all(adv_scores < targets)
    assert np.all(np.asarray(res.success))
    l2 = np.sqrt(((q.astype(np.float64) - originals) ** 2).sum(axis=(1, 2, 3)))
    np.testing.assert_allclose(np.asarray(res.l2), l2, rtol=1e-5)


def test_input_already_below_target_is_returned_untouched(setup):
    """Issue 13 kind 2: a target the original already meets gives zero added change, flagged."""
    score_fn, variables, originals, adv, targets = setup
    q, res = spatial.quantize_spatial(score_fn, variables, originals, adv, targets + 100.0)
    np.testing.assert_array_equal(np.asarray(q), originals)
    assert np.all(np.asarray(res.already_below_target)) and np.all(np.asarray(res.success))
    assert np.all(np.asarray(res.flipped) == 0) and np.all(np.asarray(res.lam) == 0)
    assert np.all(np.asarray(res.l2) == 0)
    clean = np.asarray(jax.vmap(lambda x: score_fn(variables, x))(originals.astype(np.float32)))
    np.testing.assert_allclose(np.asarray(res.score), clean, atol=1e-4)
    _, res = spatial.quantize_spatial(score_fn, variables, originals, adv, targets)
    assert not np.any(np.asarray(res.already_below_target))


def test_bisection_is_minimal(setup):
    """One flip fewer (lambda just below the chosen one) must fail; rounding alone fails here."""
    score_fn, variables, originals, adv, targets = setup
    q, res = spatial.quantize_spatial(score_fn, variables, originals, adv, targets)
    for b in range(len(originals)):
        k = int(res.flipped[b])
        assert k > 0
        # Rebuild the k-1 candidate from the switching points.
        xo, xa = originals[b].astype(np.float32), np.clip(adv[b], 0, 255)
        g = np.asarray(jax.grad(lambda x: score_fn(variables, x))(jnp.asarray(xa)))
        f = np.floor(xa) - xo
        base_up = 2 * f + 1 < 0
        helps = (np.ceil(xa) > np.floor(xa)) & np.where(base_up, g > 0, g < 0)
        lam = np.where(helps, -(2 * f + 1) / np.where(helps, g, 1), np.inf).ravel()
        order = np.argsort(lam, kind="stable")
        up = base_up.ravel().copy()
        up[order[: k - 1]] = ~up[order[: k - 1]]
        cand = np.where(up.reshape(xa.shape), np.ceil(xa), np.floor(xa))
        assert float(score_fn(variables, jnp.asarray(cand))) >= targets[b] - 1e-3
        np.testing.assert_allclose(float(res.lam[b]), np.sort(lam)[k - 1], rtol=1e-5)


def test_margin_and_one_trace_per_shape(setup):
    score_fn, variables, originals, adv, targets = setup

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(o, a, t):
        return spatial.quantize_spatial(score_fn, variables, o, a, t, spatial.SpatialConfig(margin=0.3))

    _, res = run(originals, adv, targets)
    _, res2 = run(originals, adv + 0.25, targets)  # same shape: no retrace
    ok = np.asarray(res.success)
    assert np.all(np.asarray(res.score)[ok] < targets[ok] - 0.3)
    assert res2.score.shape == (4,)
