"""Attack building blocks: loss, projections, gradient variants (optax transforms) and their use in the loop."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from qcamo_jax import attacks
from qcamo_jax.attacks import losses, projections, steps


def test_quality_loss_and_margin():
    score, target = jnp.array([40.0, 30.0, 29.0]), jnp.array(30.0)
    np.testing.assert_allclose(losses.quality_loss(score, target), [10.0, 0.0, -1.0])
    assert list(losses.is_adversarial(losses.quality_loss(score, target))) == [False, False, True]
    # A margin of 2 asks for score < T - 2: 29 is no longer enough.
    assert not bool(losses.is_adversarial(losses.quality_loss(score[2], target, margin=2.0)))


def test_with_transform_composes_score_and_gradient():
    w = jnp.arange(12.0).reshape(2, 2, 3)
    score_fn = lambda v, x: jnp.sum(v * x)  # noqa: E731
    transform = lambda x: 0.5 * x[::-1] + 3.0  # differentiable pixels -> pixels  # noqa: E731
    composed = losses.with_transform(score_fn, transform)
    x = jnp.ones((2, 2, 3))
    assert float(composed(w, x)) == pytest.approx(float(jnp.sum(w * (0.5 + 3.0))))
    np.testing.assert_allclose(jax.grad(composed, argnums=1)(w, x), 0.5 * w[::-1])
    assert losses.with_transform(score_fn, None) is score_fn


def test_l2_projection_is_the_closest_point_of_the_ball():
    key = jax.random.PRNGKey(0)
    d = jax.random.normal(key, (4, 5, 3)) * 10
    n = float(projections.l2_norm(d))
    p = projections.project_ball(d, n / 2, "l2")
    assert float(projections.l2_norm(p)) == pytest.approx(n / 2, rel=1e-5)
    np.testing.assert_allclose(p, d / 2, rtol=1e-5)  # radial shrink
    np.testing.assert_array_equal(projections.project_ball(d, 2 * n, "l2"), d)  # inside: unchanged
    np.testing.assert_array_equal(projections.project_ball(jnp.zeros(3), 0.0, "l2"), jnp.zeros(3))


def test_linf_projection_and_pixel_box():
    x0 = jnp.array([[[0.0, 100.0, 255.0]]])
    x = jnp.array([[[-50.0, 108.0, 300.0]]])
    p = projections.project(x, x0, jnp.float32(5.0), "linf", (0.0, 255.0))
    np.testing.assert_array_equal(p, [[[0.0, 105.0, 255.0]]])
    # Ball then box keeps x inside both, also for L2.
    key = jax.random.PRNGKey(1)
    x0 = jax.random.uniform(key, (8, 8, 3), minval=0, maxval=255)
    x = x0 + 300 * jax.random.normal(jax.random.PRNGKey(2), x0.shape)
    p = projections.project(x, x0, jnp.float32(100.0), "l2", (0.0, 255.0))
    assert float(projections.l2_norm(p - x0)) <= 100.0 * (1 + 1e-6)
    assert float(p.min()) >= 0.0 and float(p.max()) <= 255.0


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_random_start_lies_in_the_ball(norm):
    d = projections.random_delta(jax.random.PRNGKey(3), (16, 16, 3), jnp.float32(7.0), norm)
    size = float(projections.distortion(d, norm))
    assert 0.0 < size <= 7.0 * (1 + 1e-6)
    if norm == "l2":  # uniform in a 768-dim ball: the radius is within 1% of eps with prob. > 0.999
        assert size > 0.99 * 7.0
    else:
        assert size > 6.5


def test_steepest_directions():
    g = jnp.array([[[3.0, -4.0, 0.0]]])
    t = steps.sign_gradient()
    np.testing.assert_array_equal(t.update(g, t.init(g))[0], [[[1.0, -1.0, 0.0]]])
    t = steps.normalize_l2()
    np.testing.assert_allclose(t.update(g, t.init(g))[0], [[[0.6, -0.8, 0.0]]])
    t = steps.normalize_l1()
    np.testing.assert_allclose(t.update(g, t.init(g))[0], [[[3 / 7, -4 / 7, 0.0]]])
    # A zero gradient gives no step (not NaN).
    z = jnp.zeros((2, 2, 3))
    for t in (steps.normalize_l2(), steps.normalize_l1()):
        np.testing.assert_array_equal(t.update(z, t.init(z))[0], z)
    with pytest.raises(ValueError):
        steps.steepest_direction("l1")


def test_mi_momentum_matches_the_recurrence_of_dong_et_al():
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(3, 4, 3)).astype(np.float32) for _ in range(4)]
    mu = 0.7
    t = optax.chain(steps.mi_momentum(mu), steps.sign_gradient())  # MI-FGSM direction
    state = t.init(jnp.zeros((3, 4, 3)))
    v = np.zeros((3, 4, 3))
    for g in grads:
        out, state = t.update(jnp.asarray(g), state)
        v = mu * v + g / np.abs(g).sum()
        np.testing.assert_array_equal(out, np.sign(v))


def test_adam_direction_matches_a_numpy_reference():
    rng = np.random.default_rng(1)
    b1, b2, eps = 0.9, 0.999, 1e-8
    t = steps.adam(b1, b2, eps)
    state = t.init(jnp.zeros((5, 3)))
    m = v = np.zeros((5, 3))
    for k in range(1, 5):
        g = rng.normal(size=(5, 3))
        out, state = t.update(jnp.asarray(g, jnp.float32), state)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        ref = (m / (1 - b1**k)) / (np.sqrt(v / (1 - b2**k)) + eps)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-6)


def _linear_problem(h=8, w=8):
    wt = jax.random.normal(jax.random.PRNGKey(4), (h, w, 3))
    score = lambda v, x: jnp.sum(v * (x - 128.0))  # noqa: E731
    x0 = jnp.full((1, h, w, 3), 128.0)
    return score, wt, x0


def test_a_user_defined_variant_plugs_into_pgd_without_touching_the_loop():
    score, wt, x0 = _linear_problem()

    def red_only() -> optax.GradientTransformation:  # a new variant: perturb the red channel only
        return optax.stateless(lambda g, params=None: g * jnp.array([1.0, 0.0, 0.0]))

    cfg = attacks.PGDConfig(norm="l2", eps=20.0, steps=5, early_stop=False, gradient=red_only())
    adv, res = attacks.pgd(score, wt, x0, jnp.array([-1e6]), None, cfg)
    delta = adv - x0
    np.testing.assert_array_equal(delta[..., 1:], 0.0)
    assert float(res.l2[0]) == pytest.approx(20.0, rel=1e-4)
    # Optimal L2 step on the red channel alone: -eps * w_red / ||w_red||.
    w_red = wt[..., 0]
    np.testing.assert_allclose(delta[0, ..., 0], -20.0 * w_red / jnp.linalg.norm(w_red), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("gradient", [None, steps.mi_momentum(1.0), steps.adam()])
def test_variants_reach_the_linf_optimum_of_a_linear_score(gradient):
    score, wt, x0 = _linear_problem()
    cfg = attacks.PGDConfig(norm="linf", eps=4.0, steps=8, step_scale=2.0, early_stop=False, gradient=gradient)
    adv, res = attacks.pgd(score, wt, x0, jnp.array([-1e6]), None, cfg)
    # The lowest linear score in the Linf ball is reached at -eps * sign(w).
    np.testing.assert_allclose(adv[0] - x0[0], -4.0 * jnp.sign(wt), atol=1e-5)
    assert float(res.score[0]) == pytest.approx(float(-4.0 * jnp.abs(wt).sum()), rel=1e-5)
