"""The quantizers' search over the switching-point count (issue 13 kind 2), on synthetic loss tables."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qcamo_jax.quantize.search import limit_flips, search_flips


def run(losses, margin=0.0, n=None):
    table = jnp.asarray(losses, jnp.float32)
    seen = []

    def evaluate(k):
        jax.debug.callback(lambda v: seen.append(int(v)), k)
        return table[k], table[k] * 2.0

    n = len(losses) - 1 if n is None else n
    res = jax.jit(lambda: search_flips(evaluate, n, len(losses) - 1, margin))()
    jax.effects_barrier()
    return res, seen


def test_zero_change_first_and_returned_when_it_succeeds():
    res, seen = run([-1.0, 2.0, -5.0, -6.0])
    assert 0 in seen  # (XLA may run independent evaluations in any order)
    assert int(res.k) == 0 and bool(res.success) and float(res.loss) == -1.0 and float(res.aux) == -2.0


@pytest.mark.parametrize("seed", range(20))
def test_smallest_evaluated_success_even_when_not_monotone(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 200))
    losses = rng.normal(0.5, 1.0, n + 1)
    losses[0] = 1.0
    losses[-1] = -1.0  # all moves succeed, the rest is noise
    res, seen = run(losses)
    ok = [k for k in seen if losses[k] < 0]
    assert bool(res.success) and int(res.k) == min(ok)
    np.testing.assert_allclose(float(res.loss), losses[int(res.k)], rtol=1e-6)
    # the bisection closed: the candidate just below was evaluated and failed
    assert int(res.k) - 1 in seen and losses[int(res.k) - 1] >= 0


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

    def f(t):
        return search_flips(lambda k: (t[k + 1], ()), 3, 3, 0.0, zero=-1)

    r = jax.jit(f)(table)
    assert int(r.k) == 1 and bool(r.success) and not bool(r.zero_ok)
    r = jax.jit(f)(table.at[0].set(-0.1))
    assert int(r.k) == -1 and bool(r.zero_ok)
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
