"""FGSM, I-FGSM and PGD on scores with closed-form optima, early stop, keys, and batch == one-by-one."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qcamo_jax import attacks

H, W = 12, 16


def linear_score(v, x):
    """Q(x) = w . (x - 128) + b: the minimal L2 change to reach Q < T is (Q(x0) - T) / ||w||."""
    return jnp.sum(v["w"] * (x - 128.0)) + v["b"]


@pytest.fixture(scope="module")
def linear():
    w = jax.random.normal(jax.random.PRNGKey(0), (H, W, 3))
    w = 0.05 * w / jnp.linalg.norm(w)  # ||w|| = 0.05 score points per pixel-L2 unit
    images = jax.random.uniform(jax.random.PRNGKey(1), (4, H, W, 3), minval=90.0, maxval=166.0)
    return {"w": w, "b": jnp.float32(50.0)}, images


class SmallCNN(nn.Module):
    """A small nonlinear quality regressor (random weights) for batch/one-by-one comparisons."""

    @nn.compact
    def __call__(self, x):  # [B, H, W, 3] pixels -> [B]
        x = x / 127.5 - 1.0
        x = nn.tanh(nn.Conv(8, (3, 3))(x))
        x = nn.tanh(nn.Conv(8, (3, 3), strides=(2, 2))(x))
        x = jnp.mean(x, axis=(1, 2))
        return 50.0 + 20.0 * nn.Dense(1)(x)[:, 0]


@pytest.fixture(scope="module")
def cnn():
    module = SmallCNN()
    variables = module.init(jax.random.PRNGKey(2), jnp.zeros((1, H, W, 3)))
    score = lambda v, x: module.apply(v, x[None])[0]  # noqa: E731
    images = jax.random.uniform(jax.random.PRNGKey(3), (5, H, W, 3), minval=0.0, maxval=255.0)
    return score, variables, images


def test_fgsm_is_one_signed_or_normalised_step(linear):
    v, x = linear
    w = v["w"]
    adv, res = attacks.fgsm(linear_score, v, x, -1e6, None, attacks.FGSMConfig(norm="linf", eps=3.0))
    np.testing.assert_allclose(adv, x - 3.0 * jnp.sign(w), atol=1e-4)
    assert list(np.asarray(res.iterations)) == [1] * 4
    np.testing.assert_allclose(res.linf, 3.0, rtol=1e-5)
    adv, res = attacks.fgsm(linear_score, v, x, -1e6, None, attacks.FGSMConfig(norm="l2", eps=40.0))
    np.testing.assert_allclose(adv, x - 40.0 * w / jnp.linalg.norm(w), atol=1e-4)
    np.testing.assert_allclose(res.l2, 40.0, rtol=1e-5)
    # Score of the stepped image: Q(x0) - eps * ||w||.
    q0 = jax.vmap(linear_score, in_axes=(None, 0))(v, x)
    np.testing.assert_allclose(res.score, q0 - 40.0 * 0.05, rtol=1e-5)


def test_pgd_l2_succeeds_iff_the_budget_covers_the_optimum(linear):
    v, x = linear
    q0 = jax.vmap(linear_score, in_axes=(None, 0))(v, x)
    optimum = jnp.array([50.0, 100.0, 200.0, 400.0])  # minimal L2 per image
    targets = q0 - 0.05 * optimum
    budgets = jnp.array([60.0, 90.0, 250.0, 390.0])  # enough, not enough, enough, not enough
    cfg = attacks.PGDConfig(norm="l2", steps=20)
    adv, res = attacks.pgd(linear_score, v, x, targets, None, cfg, eps=budgets)
    assert list(np.asarray(res.success)) == [True, False, True, False]
    np.testing.assert_array_equal(res.budget, budgets)
    assert np.all(np.asarray(res.l2) <= np.asarray(budgets) * (1 + 1e-5))
    # A failed image ends at the best point of its ball: the boundary along -w.
    for i in (1, 3):
        np.testing.assert_allclose(res.l2[i], budgets[i], rtol=1e-4)
        np.testing.assert_allclose(res.score[i], q0[i] - 0.05 * budgets[i], rtol=1e-4)


def test_early_stop_freezes_finished_images_and_counts_their_gradients(linear):
    v, x = linear
    q0 = jax.vmap(linear_score, in_axes=(None, 0))(v, x)
    eps, n = 400.0, 10
    alpha = 2.5 * eps / n  # 100 pixel-L2 per step, straight along -w
    optimum = jnp.array([50.0, 150.0, 250.0, 5000.0])  # crossed after 1, 2, 3 steps; never
    targets = q0 - 0.05 * optimum
    adv, res = attacks.pgd(linear_score, v, x, targets, None, attacks.PGDConfig(eps=eps, steps=n, schedule="constant"))
    # Iterate k is checked at gradient evaluation k + 1; the first adversarial iterate is returned.
    assert list(np.asarray(res.iterations)) == [2, 3, 4, n]
    np.testing.assert_allclose(res.l2, [alpha, 2 * alpha, 3 * alpha, eps], rtol=1e-4)
    assert list(np.asarray(res.success)) == [True, True, True, False]
    # Without early stop every image runs all steps and ends on its ball's boundary.
    _, res_all = attacks.pgd(linear_score, v, x, targets, None, attacks.PGDConfig(eps=eps, steps=n, schedule="constant", early_stop=False))
    assert list(np.asarray(res_all.iterations)) == [n] * 4
    np.testing.assert_allclose(res_all.l2, eps, rtol=1e-4)


def test_ifgsm_steps_of_eps_over_n_and_stays_in_the_box():
    w = jax.random.normal(jax.random.PRNGKey(5), (H, W, 3))
    x = jnp.full((1, H, W, 3), 254.0)  # at the top of the range: half the steps get clipped
    cfg = attacks.ifgsm_config(eps=8.0, steps=4)
    assert cfg.steps == 4 and cfg.step_scale == 1.0 and not cfg.random_start and cfg.schedule == "constant"
    assert attacks.ifgsm_config(eps=4.0).steps == 5  # Kurakin et al.: min(eps + 4, 1.25 eps)
    score = lambda v, im: -jnp.sum(v * im)  # noqa: E731 ; lowering it pushes pixels along +w
    adv, res = attacks.ifgsm(score, w, x, -1e9, None, cfg)
    expected = jnp.clip(254.0 + 8.0 * jnp.sign(w), 0.0, 255.0)
    np.testing.assert_allclose(adv[0], expected, atol=1e-4)
    assert float(adv.max()) <= 255.0 and float(res.linf[0]) <= 8.0 + 1e-5


def test_random_start_needs_and_follows_the_key(cnn):
    score, variables, x = cnn
    cfg = attacks.PGDConfig(norm="l2", eps=100.0, steps=2, random_start=True, early_stop=False)
    with pytest.raises(ValueError, match="PRNG key"):
        attacks.pgd(score, variables, x, 0.0, None, cfg)
    run = jax.jit(functools.partial(attacks.pgd, score, config=cfg))
    a1, r1 = run(variables, x, 0.0, jax.random.key(7))
    a2, _ = run(variables, x, 0.0, jax.random.key(7))
    a3, _ = run(variables, x, 0.0, jax.random.key(8))
    np.testing.assert_array_equal(a1, a2)
    assert float(jnp.abs(a1 - a3).max()) > 1.0
    assert np.all(np.asarray(r1.l2) <= 100.0 * (1 + 1e-5))
    # Per-image keys ([B] stacked) are accepted as well and give the same as splitting one key.
    a4, _ = run(variables, x, 0.0, jax.random.split(jax.random.key(7), x.shape[0]))
    np.testing.assert_array_equal(a1, a4)


def test_transform_before_scoring_is_what_the_attack_optimises(cnn):
    score, variables, x = cnn
    blur = lambda im: 0.5 * im + 0.25 * (jnp.roll(im, 1, 0) + jnp.roll(im, -1, 0))  # noqa: E731
    q_blur = jax.vmap(lambda im: score(variables, blur(im)))(x)
    targets = q_blur - 1.0
    adv, res = attacks.pgd(score, variables, x, targets, None, attacks.PGDConfig(eps=300.0, steps=20), transform=blur)
    np.testing.assert_allclose(res.score, jax.vmap(lambda im: score(variables, blur(im)))(adv), rtol=1e-5, atol=1e-5)
    assert bool(jnp.all(res.score < targets) == jnp.all(res.success))
    assert float(res.success.mean()) == 1.0


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_batched_pgd_equals_one_image_at_a_time(cnn, norm):
    score, variables, x = cnn
    q0 = jax.vmap(score, in_axes=(None, 0))(variables, x)
    eps = 150.0 if norm == "l2" else 3.0
    cfg = attacks.PGDConfig(norm=norm, eps=eps, steps=6, random_start=True, gradient=attacks.steps.mi_momentum())
    targets = q0 - jnp.linspace(0.5, 3.0, x.shape[0])  # some images finish early, others do not
    key = jax.random.key(11)
    adv, res = jax.jit(functools.partial(attacks.pgd, score, config=cfg))(variables, x, targets, key)
    loss_fn = attacks.make_loss(score)
    single = jax.jit(lambda x0, t, k: attacks.pgd_single(loss_fn, variables, x0, t, k, eps, cfg))
    keys = jax.random.split(key, x.shape[0])
    for i in range(x.shape[0]):
        out = single(x[i], targets[i], keys[i])
        np.testing.assert_allclose(adv[i], out.x, atol=2e-3)
        np.testing.assert_allclose(res.score[i], out.score, rtol=1e-4, atol=1e-4)
        assert int(res.iterations[i]) == int(out.iterations)
    assert len(set(np.asarray(res.iterations).tolist())) > 1  # the batch really had different stops


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        attacks.PGDConfig(norm="l1")
    with pytest.raises(ValueError):
        attacks.PGDConfig(steps=0)
    with pytest.raises(ValueError):
        attacks.PGDConfig(schedule="linear")
    with pytest.raises(ValueError):
        attacks.SearchConfig(bisection_steps=0)
    with pytest.raises(ValueError, match="images must be"):
        attacks.pgd(linear_score, {}, jnp.zeros((4, 4, 3)), 0.0)
    with pytest.raises(ValueError, match="scalar or shape"):
        attacks.pgd(linear_score, {"w": 1.0, "b": 0.0}, jnp.zeros((2, 4, 4, 3)), jnp.zeros(3))


def test_cosine_schedule_anneals_the_step(linear):
    v, x = linear
    eps, n = 1000.0, 4
    cfg = attacks.PGDConfig(eps=eps, steps=n, step_scale=1.0, schedule="cosine", early_stop=False)
    adv, res = attacks.pgd(linear_score, v, x[:1], -1e6, None, cfg)
    # Straight line along -w: travelled distance = sum_k alpha (1 + cos(pi k / n)) / 2, ball not reached.
    alpha = 1.0 * eps / n
    expected = sum(alpha * 0.5 * (1 + np.cos(np.pi * k / n)) for k in range(n))
    assert expected < eps
    np.testing.assert_allclose(res.l2[0], expected, rtol=1e-4)
