"""The paper's budget search: accuracy against closed-form optima, one trace per shape, KonCept512."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from counting import counting_backward
from qcamo_jax import attacks
from qcamo_jax.attacks.pgd import KnownGradient, pgd_single
from qcamo_jax.attacks.search import secant_zero

H, W = 16, 24


def linear_score(v, x):
    """Q(x) = w . (x - 128) + b: minimal L2 to reach Q < T is (Q(x0) - T) / ||w||."""
    return jnp.sum(v["w"] * (x - 128.0)) + v["b"]


def quadratic_score(v, x):
    """Q(x) = s ||x - c||^2: minimal L2 to reach Q < T is ||x0 - c|| - sqrt(T / s) (move towards c)."""
    return v["s"] * jnp.sum(jnp.square(x - v["c"]))


def _images(n, seed=1):
    return jax.random.uniform(jax.random.PRNGKey(seed), (n, H, W, 3), minval=40.0, maxval=215.0)


#: The default search (first-order first try, secant budgets, early exit on a tight bracket, 5 steps
#: per try), the same with bisection budgets, and the thorough one (10 steps, every try); docs/attacks.md
#: "Gradients per image".
CONFIGS = {
    "default": attacks.SearchConfig(),
    "bisection": attacks.SearchConfig(budget="bisection", rtol=0.1),
    "thorough": attacks.SearchConfig.thorough(),
}
#: The configs that stop on a bracket of rtol and rely on the refinement.
EARLY_EXIT = ("default", "bisection")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_search_finds_the_minimal_l2_of_a_linear_score_within_2_percent(name):
    w = jax.random.normal(jax.random.PRNGKey(0), (H, W, 3))
    v = {"w": 0.05 * w / jnp.linalg.norm(w), "b": jnp.float32(60.0)}
    x = _images(8)
    optimum = jnp.array([30.0, 75.0, 160.0, 333.0, 610.0, 980.0, 1450.0, 1900.0])
    q0 = jax.vmap(linear_score, in_axes=(None, 0))(v, x)
    targets = q0 - 0.05 * optimum
    adv, res = attacks.make_attack(linear_score, "search", CONFIGS[name])(v, x, targets, None)
    assert bool(res.success.all())
    rel = np.asarray(res.l2 / optimum)
    assert np.all(rel >= 1.0 - 1e-4), rel  # nothing beats the optimum
    # The early exits stop on a 10-15% bracket and rely on the refinement; next to eps_max, where the
    # pixel box bends PGD's path (optimum 1900), that measured 2.09% above the optimum (docs/attacks.md).
    assert np.all(rel <= (1.025 if name in EARLY_EXIT else 1.02)), rel
    # Every image got its own budget, and its distortion fits in it.
    assert len(set(np.round(np.asarray(res.budget), 3).tolist())) == 8
    assert np.all(np.asarray(res.l2) <= np.asarray(res.budget) * (1 + 1e-5))
    np.testing.assert_array_less(res.score, targets)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_search_finds_the_minimal_l2_of_a_quadratic_score_and_reports_failures(name):
    c = jnp.full((H, W, 3), 128.0)
    v = {"s": jnp.float32(1e-3), "c": c}
    # Images at distance 3000 from c (random directions, inside the pixel box): the straight path to c
    # is the optimal one and stays in the box.
    u = jax.random.rademacher(jax.random.PRNGKey(2), (5, H, W, 3), jnp.float32)
    u = u * jax.random.uniform(jax.random.PRNGKey(3), u.shape, minval=0.8, maxval=1.2)
    u = u / jnp.sqrt(jnp.sum(jnp.square(u), axis=(1, 2, 3), keepdims=True))
    x = c + 3000.0 * u
    assert float(x.min()) >= 0.0 and float(x.max()) <= 255.0
    r0 = jnp.full((5,), 3000.0)
    optimum = jnp.array([40.0, 200.0, 700.0, 1500.0, 2600.0])  # the last one is beyond eps_max = 2000
    targets = 1e-3 * jnp.square(r0 - optimum)
    adv, res = attacks.make_attack(quadratic_score, "search", CONFIGS[name])(v, x, targets, None)
    assert list(np.asarray(res.success)) == [True, True, True, True, False]
    rel = np.asarray(res.l2[:4] / optimum[:4])
    assert np.all((rel >= 1.0 - 1e-4) & (rel <= 1.02)), rel
    # The failed image returns its best effort: the lowest score seen, within eps_max.
    assert float(res.l2[4]) <= 2000.0 * (1 + 1e-5)
    assert float(res.score[4]) < float(quadratic_score(v, x[4]))


@pytest.mark.parametrize("savers", [False, True])
def test_one_trace_per_input_shape_and_batch_equals_one_by_one(savers):
    w = jax.random.normal(jax.random.PRNGKey(3), (H, W, 3))
    v = {"w": 0.05 * w / jnp.linalg.norm(w), "b": jnp.float32(60.0)}
    # A nonlinear score so that the comparison is not trivially exact.
    score = lambda v, x: 20.0 * jnp.tanh(linear_score(v, x) / 20.0)  # noqa: E731
    # savers: per-image first try and per-image early exit from the tries' while loop (images of a
    # batch stop after different numbers of tries).
    cfg = attacks.SearchConfig(pgd=attacks.PGDConfig(steps=5, random_start=True), bisection_steps=4,
                               first_guess=1.0 if savers else 0.0, rtol=0.2 if savers else 0.0)
    chex.clear_trace_counter()
    attack = attacks.attack_fn(score, "search", cfg)

    @chex.assert_max_traces(n=1)
    def traced(variables, images, targets, key):
        return attack(variables, images, targets, key)

    run = jax.jit(traced)
    x = _images(4, seed=4)
    q0 = jax.vmap(score, in_axes=(None, 0))(v, x)
    key = jax.random.key(0)
    for shift in (2.0, 5.0, 9.0):  # new targets, images, keys: no re-trace
        adv, res = run(v, x + shift, q0 - shift, jax.random.fold_in(key, int(shift)))
    with pytest.raises(AssertionError):  # a new shape is a new trace (and chex counts it)
        run(v, x[:2], q0[:2] - 1.0, key)
    # Batched == one image at a time, with the per-image keys the batched call derives.
    adv, res = run(v, x, q0 - 5.0, key)
    keys = jax.random.split(key, 4)
    loss_fn = attacks.make_loss(score)
    single = jax.jit(lambda x0, t, k: attacks.search_single(loss_fn, v, x0, t, k, cfg))
    for i in range(4):
        out = single(x[i], q0[i] - 5.0, keys[i])
        np.testing.assert_allclose(adv[i], out.x, atol=1e-3)
        np.testing.assert_allclose(res.budget[i], out.budget, rtol=1e-5)
        assert int(res.iterations[i]) == int(out.iterations)


def test_secant_zero_of_two_failed_points():
    line = lambda *pts: jnp.asarray(pts, jnp.float32)  # noqa: E731
    assert float(secant_zero(line((0.0, 10.0), (50.0, 5.0)))) == pytest.approx(100.0)
    # The first-order model: one unit left of the origin, the loss higher by the gradient norm.
    assert float(secant_zero(line((-1.0, 10.0 + 0.5), (0.0, 10.0)))) == pytest.approx(20.0)
    assert np.isinf(float(secant_zero(line((0.0, 5.0), (50.0, 6.0)))))  # the loss rose: no line to follow
    assert np.isinf(float(secant_zero(line((0.0, 5.0), (0.0, 5.0)))))  # one point twice (no first guess)


def test_pgd_reuses_a_known_gradient_only_at_its_own_start():
    w = jax.random.normal(jax.random.PRNGKey(0), (H, W, 3))
    v = {"w": 0.05 * w / jnp.linalg.norm(w), "b": jnp.float32(60.0)}
    score = lambda v, x: 20.0 * jnp.tanh(linear_score(v, x) / 20.0)  # noqa: E731
    loss_fn = attacks.make_loss(score)
    x0 = _images(1)[0]
    target = score(v, x0) - 3.0
    (loss0, _), g0 = jax.value_and_grad(lambda x: loss_fn(v, x, target), has_aux=True)(x0)
    cfg = attacks.PGDConfig(steps=4, early_stop=False)
    run = jax.jit(lambda known, x_init: pgd_single(loss_fn, v, x0, target, None, 30.0, cfg, x_init, known))
    plain = run(None, x0)
    reused = run(KnownGradient(x0, loss0, g0, jnp.asarray(True)), x0)
    np.testing.assert_allclose(reused.x, plain.x, atol=1e-4)
    assert int(plain.iterations) == 4 and int(reused.iterations) == 3
    # Invalid, or known somewhere else than the start point: computed again and counted.
    assert int(run(KnownGradient(x0, loss0, g0, jnp.asarray(False)), x0).iterations) == 4
    assert int(run(KnownGradient(x0 + 1.0, loss0, g0, jnp.asarray(True)), x0).iterations) == 4


@pytest.mark.parametrize("name", ["default", "thorough"])
def test_reported_gradients_are_the_backward_passes_run_image_by_image(name):
    """One image at a time (the CPU engine's lax.map): ``iterations`` counts exactly the backward passes
    the program runs; the default's first try reuses its first guess's gradient instead of computing it."""
    w = jax.random.normal(jax.random.PRNGKey(0), (H, W, 3))
    v = {"w": 0.05 * w / jnp.linalg.norm(w), "b": jnp.float32(60.0)}
    score = lambda v, x: 20.0 * jnp.tanh(linear_score(v, x) / 20.0)  # noqa: E731
    calls = []
    run = attacks.make_attack(counting_backward(score, calls), "search", CONFIGS[name])
    x = _images(1, seed=6)
    adv, res = jax.block_until_ready(run(v, x, score(v, x[0]) - 4.0, None))
    jax.effects_barrier()
    assert bool(res.success[0])
    assert len(calls) == int(res.iterations[0]) > 0


@pytest.fixture(scope="module")
def tiny_koncept():
    from qcamo_jax.models.hub import load_model

    try:
        return load_model("tiny-random")
    except (ImportError, AttributeError) as exc:  # pragma: no cover - model package not there yet
        pytest.skip(f"tiny KonCept512 not available: {exc}")


def _test_images(size, n_per_photo):
    from photos import photo

    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        big = photo(name, (size[0] * 3 // 2, size[1] * 3 // 2))
        for k in range(n_per_photo):  # different crops (and a flip) of each photo
            dy, dx = (k * 7) % (size[0] // 2), (k * 11) % (size[1] // 2)
            im = big[dy:dy + size[0], dx:dx + size[1]]
            out.append(im[:, ::-1] if k % 2 else im)
    return jnp.asarray(np.stack(out), jnp.float32)


def test_tiny_koncept_default_settings_reach_target_on_95_percent(tiny_koncept):
    """Random-weight KonCept512 (tiny), T = own score - 10, default search settings.

    Random weights put the raw output near 0 with input gradients ~1e-4 points per pixel-L2, where
    "10 points" has no meaning; the score is therefore rescaled (a change of units, same network) so
    that the median input-gradient norm is 0.1 points per pixel-L2 unit, the order of magnitude of
    the trained model (the paper's drops of 10-40 points at L2 distortions of a few hundred).
    """
    m = tiny_koncept
    x = _test_images((80, 96), 5)  # 20 images
    grads = jax.jit(jax.vmap(jax.grad(m.score_one, argnums=1), in_axes=(None, 0)))(m.variables, x)
    scale = 0.1 / float(jnp.median(jnp.sqrt(jnp.sum(jnp.square(grads), axis=(1, 2, 3)))))
    score = lambda v, im: scale * m.score_one(v, im)  # noqa: E731
    q0 = jax.vmap(score, in_axes=(None, 0))(m.variables, x)
    adv, res = attacks.make_attack(score, "search")(m.variables, x, q0 - 10.0, jax.random.key(0))
    rate = float(res.success.mean())
    print(f"tiny KonCept512: success {rate:.2f}, L2 median {float(jnp.median(res.l2)):.1f}, "
          f"max {float(res.l2.max()):.1f}, gradients/image {float(res.iterations.mean()):.1f}")
    assert rate >= 0.95
    assert bool(jnp.all(jnp.where(res.success, res.score < q0 - 10.0, True)))
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 255.0


DEFAULT_WEIGHTS = os.path.join(os.path.dirname(__file__), "..", "weights", "default.safetensors")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(DEFAULT_WEIGHTS), reason="weights/default.safetensors not there yet")
@pytest.mark.parametrize("target", [50.0, 30.0])
def test_default_model_reaches_targets(target):
    from photos import photo
    from qcamo_jax.models.hub import load_model

    m = load_model("default")
    h, w = m.input_size
    names = ("astronaut", "chelsea", "coffee", "rocket")
    x = jnp.asarray(np.stack([photo(n, (h, w)) for n in names]), jnp.float32)
    q0 = jax.vmap(m.score_one, in_axes=(None, 0))(m.variables, x)
    keep = np.asarray(q0 > target)
    if not keep.any():
        pytest.skip(f"no test photo scores above {target}")
    adv, res = attacks.make_attack(m.score_one, "search")(m.variables, x[keep], target, jax.random.key(0))
    print(f"default model, T={target}: success {float(res.success.mean()):.2f}, L2 {np.asarray(res.l2)}")
    assert float(res.success.mean()) >= 0.95


@pytest.mark.slow
def test_full_size_random_koncept_one_small_image():
    from photos import photo
    from qcamo_jax.models.hub import init_random

    m = init_random("koncept512", {"variant": "keras", "size": "full"})
    x = jnp.asarray(photo("chelsea", (160, 192))[None], jnp.float32)
    g = jax.grad(m.score_one, argnums=1)(m.variables, x[0])
    scale = 0.1 / float(jnp.sqrt(jnp.sum(jnp.square(g))))
    score = lambda v, im: scale * m.score_one(v, im)  # noqa: E731
    q0 = score(m.variables, x[0])
    cfg = attacks.SearchConfig(bisection_steps=4)
    adv, res = attacks.make_attack(score, "search", cfg)(m.variables, x, q0 - 10.0, jax.random.key(0))
    print(f"full KonCept512 (random): success {bool(res.success[0])}, L2 {float(res.l2[0]):.1f}")
    assert bool(res.success[0])


@pytest.mark.parametrize("name, grads", [("thorough", 7), ("default", 1), ("bisection", 1)])
def test_an_image_already_below_target_is_returned_unchanged(name, grads):
    w = jax.random.normal(jax.random.PRNGKey(0), (H, W, 3))
    v = {"w": 0.05 * w / jnp.linalg.norm(w), "b": jnp.float32(60.0)}
    x = _images(2, seed=5)
    q0 = jax.vmap(linear_score, in_axes=(None, 0))(v, x)
    targets = q0 + jnp.array([1.0, -5.0])  # image 0 already below its target
    adv, res = attacks.make_attack(linear_score, "search", CONFIGS[name])(v, x, targets, None)
    assert list(np.asarray(res.success)) == [True, True]
    np.testing.assert_array_equal(adv[0], x[0])
    assert float(res.l2[0]) == 0.0 and float(res.budget[0]) == 0.0 and int(res.iterations[0]) == grads
    np.testing.assert_allclose(res.l2[1], 5.0 / 0.05, rtol=0.02)
