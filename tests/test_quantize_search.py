"""The quantizers' search over the switching-point count (issue 13 kind 2), on synthetic loss tables."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qcamo_jax.quantize.search import RTOL, bisection_steps, limit_flips, max_evaluations, search_flips


def run(losses, margin=0.0, n=None, **options):
    table = jnp.asarray(losses, jnp.float32)
    seen = []

    def evaluate(k):
        jax.debug.callback(lambda v: seen.append(int(v)), k)
        return table[k], table[k] * 2.0

    n = len(losses) - 1 if n is None else n
    res = jax.jit(lambda: search_flips(evaluate, n, len(losses) - 1, margin, **options))()
    jax.effects_barrier()
    return res, seen


def test_zero_change_first_and_returned_when_it_succeeds():
    res, seen = run([-1.0, 2.0, -5.0, -6.0])
    assert 0 in seen  # (XLA may run independent evaluations in any order)
    assert int(res.k) == 0 and bool(res.success) and float(res.loss) == -1.0 and float(res.aux) == -2.0


@pytest.mark.parametrize("method", ["itp", "bisection"])
@pytest.mark.parametrize("seed", range(20))
def test_smallest_evaluated_success_even_when_not_monotone(seed, method):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 200))
    losses = rng.normal(0.5, 1.0, n + 1)
    losses[0] = 1.0
    losses[-1] = -1.0  # all moves succeed, the rest is noise
    res, seen = run(losses, method=method)
    ok = [k for k in seen if losses[k] < 0]
    assert bool(res.success) and int(res.k) == min(ok)
    np.testing.assert_allclose(float(res.loss), losses[int(res.k)], rtol=1e-6)
    # the bracket closed (n < 256, so rtol * n < 1: adjacent): the candidate just below failed
    assert int(res.k) - 1 in seen and losses[int(res.k) - 1] >= 0
    # on pure noise ITP needs at most one step more than bisection; the count is the true one
    assert len(seen) == int(res.evaluations) <= max_evaluations(n)
    if method == "bisection":
        assert len(seen) <= 2 + bisection_steps(n + 1)


def _smooth(n, k_star, curve):
    """Losses that cross 0 between ``k_star - 1`` and ``k_star``, smooth along ``predict`` (first-order)."""
    k = np.arange(n + 1, dtype=np.float64)
    predict = -np.sqrt(k / n)  # gains shrink along the sorted moves, like the quantizers' first-order loss
    loss = curve(predict - predict[k_star] - 0.5 * (predict[k_star - 1] - predict[k_star]))
    assert loss[k_star - 1] >= 0 > loss[k_star]
    return jnp.asarray(loss, jnp.float32), jnp.asarray(predict, jnp.float32)


CURVES = {"linear": lambda d: 40.0 * d, "saturating": lambda d: np.tanh(30.0 * d) * 5.0,
          "convex": lambda d: np.expm1(8.0 * d)}


@pytest.mark.parametrize("curve", list(CURVES))
@pytest.mark.parametrize("k_star", [3, 1_000, 77_777, 400_001])
def test_itp_finds_the_crossing_never_slower_than_bisection_plus_one(k_star, curve):
    """On a loss that is monotone along the first-order prediction (linear, saturating or convex), ITP
    down to adjacent candidates finds the same smallest success as bisection; where the loss is linear
    along the prediction (what the interpolation assumes) in a fraction of bisection's candidates, and
    never in more than one candidate over it; with the default ``rtol`` the result is at most ``rtol``
    of ``k`` above the crossing."""
    n = 589_824  # 3 x 384 x 512 coefficients
    loss, predict = _smooth(n, k_star, CURVES[curve])

    def go(**options):
        return jax.jit(lambda: search_flips(lambda k: (loss[k], ()), n, n, 0.0, predict=lambda k: predict[k],
                                            **options))()

    plain = go(method="bisection", rtol=0.0)
    exact = go(rtol=0.0)
    default = go()
    assert int(plain.k) == int(exact.k) == k_star
    assert int(plain.evaluations) >= 2 + int(np.log2(n))  # bisection halves the bracket, no faster
    assert int(exact.evaluations) <= max_evaluations(n) == 2 + bisection_steps(n + 1) + 1
    if curve == "linear":
        assert int(exact.evaluations) <= int(plain.evaluations) - 8, (int(exact.evaluations), int(plain.evaluations))
    assert k_star <= int(default.k) <= k_star + max(1, RTOL * int(default.k)) and bool(default.success)
    assert int(default.evaluations) <= int(exact.evaluations)
    # without a prediction ITP interpolates in k: still exact, never past the worst case
    in_k = jax.jit(lambda: search_flips(lambda k: (loss[k], ()), n, n, 0.0, rtol=0.0))()
    assert int(in_k.k) == k_star and int(in_k.evaluations) <= max_evaluations(n)


def test_bad_options():
    with pytest.raises(ValueError, match="rtol"):
        search_flips(lambda k: (jnp.float32(0), ()), 3, 3, 0.0, rtol=1.0)
    with pytest.raises(ValueError, match="method"):
        search_flips(lambda k: (jnp.float32(0), ()), 3, 3, 0.0, method="secant")


def test_failure_returns_the_best_reached():
    res, _ = run([3.0, 2.0, 1.0, 0.5])
    assert not bool(res.success) and int(res.k) == 3 and float(res.loss) == 0.5
    res, _ = run([0.2, 2.0, 1.0, 0.5])
    assert not bool(res.success) and int(res.k) == 0 and float(res.loss) == np.float32(0.2)


def test_margin_and_cap():
    res, _ = run([1.0, -0.5, -0.5, -2.0], margin=1.0)
    assert int(res.k) == 3
    res, seen = run([1.0, -0.5, -0.5, -2.0], n=2)  # capped at k = 2: k = 3 never evaluated
    assert int(res.k) == 1 and 3 not in seen


def test_zero_change_at_minus_one():
    """Spatial quantizer: the input itself is candidate -1, tried before the lambda family."""
    table = jnp.asarray([3.0, 1.0, -1.0, 0.5, -2.0])  # index k + 1; not monotone

    def f(t, method):
        return search_flips(lambda k: (t[k + 1], ()), 3, 3, 0.0, zero=-1, method=method)

    # bisection: -1 fails, 3 succeeds, then 1 (the midpoint) succeeds and 0 fails
    r = jax.jit(f, static_argnums=1)(table, "bisection")
    assert int(r.k) == 1 and bool(r.success) and not bool(r.zero_ok)
    # ITP interpolates to 2, which fails: 3 is then the smallest success it saw, with a failure below it
    r = jax.jit(f, static_argnums=1)(table, "itp")
    assert int(r.k) in (1, 3) and float(r.loss) == table[int(r.k) + 1] and bool(r.success)
    for method in ("itp", "bisection"):
        r = jax.jit(f, static_argnums=1)(table.at[0].set(-0.1), method)
        assert int(r.k) == -1 and bool(r.zero_ok) and int(r.evaluations) == 1
    k, ok = limit_flips(lambda k: jnp.float32(k + 1), 3, 3, 0.5, zero=-1)
    assert int(k) == -1 and bool(ok)


def test_limit_flips():
    l2 = jnp.asarray([0.0, 1.0, 2.0, 2.0, 3.0, 5.0, 8.0])
    f = jax.jit(lambda lim: limit_flips(lambda k: l2[k] + 1.0, 6, 6, lim), static_argnums=0)
    assert [int(f(lim)[0]) for lim in (1.0, 3.0, 3.5, 4.0, 9.0)] == [0, 3, 3, 4, 6]
    assert not bool(f(0.5)[1]) and bool(f(1.0)[1])
    k, ok = limit_flips(lambda k: 1 / 0, 6, 6, float("inf"))  # no limit: nothing evaluated
    assert int(k) == 6 and bool(ok)


def test_one_trace():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(table, n):
        return search_flips(lambda k: (table[k], ()), n, 15, 0.0)

    f(jnp.linspace(1.0, -1.0, 16), 15)
    r = f(jnp.linspace(2.0, -1.0, 16), 9)
    assert int(r.k) <= 9
