"""The quantizers' search over how many switching points are passed (the candidate index ``k``).

Both quantizers order their per-entry moves by switching point (``lambda_j``) and build candidate ``k``
by applying the ``k`` first moves; ``k = 0`` is the smallest change they consider. The true loss of a
candidate (the model on the exact file, worst case over the re-encoder set) is not monotone in ``k``,
so the search only ever returns a candidate it evaluated:

1. the zero-change candidate first (``k = 0``, or ``k = -1`` when the input itself is not candidate
   0): if it succeeds it is returned;
2. ``k = n`` (all moves): if it fails too, the candidate of the two with the lower loss is returned
   (the best the quantizer reached, ``success = False``);
3. otherwise a bisection on ``(0, n)`` keeping ``hi`` a verified success; every success seen lowers
   ``hi``, so the result is the smallest successful ``k`` evaluated.

A distortion limit is a cap on ``k`` found first by :func:`limit_flips` (no model evaluation: distortion
grows with ``k``). Everything is ``lax`` loops with a static step count: one compile per shape; under
``vmap`` every step runs for every image (the cost is the static count).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp


class SearchResult(NamedTuple):
    """Outcome of :func:`search_flips` (scalars, plus the evaluated candidate's ``aux``).

    Attributes:
      k: int32, the chosen candidate.
      loss: float32, its true loss.
      aux: whatever ``evaluate`` returned with the loss for that candidate (e.g. per-member scores).
      success: bool, ``loss < -margin``.
      zero_ok: bool, the zero-change candidate (``k = zero``) succeeded (it is then the result).
      evaluations: int32, candidates evaluated (static: the compiled program's count).
    """

    k: jax.Array
    loss: jax.Array
    aux: Any
    success: jax.Array
    zero_ok: jax.Array
    evaluations: jax.Array


def bisection_steps(n: int) -> int:
    """Number of halvings that reduce an interval of length ``n`` to adjacent points (>= 1)."""
    return max(1, math.ceil(math.log2(max(n, 1))))


def _pick(c, a, b):
    return jax.tree.map(lambda x, y: jnp.where(c, x, y), a, b)


def search_flips(evaluate: Callable[[jax.Array], tuple[jax.Array, Any]], n: jax.Array, n_max: int, margin: float,
                 *, zero: int = 0) -> SearchResult:
    """Smallest evaluated ``k`` in ``[zero, n]`` with ``loss < -margin`` (module docstring for the order).

    All evaluations run in one ``lax.fori_loop`` body (step 0: ``k = zero``, step 1: ``k = n``, then the
    bisection), so ``evaluate`` is traced once: compile time does not grow with the number of phases.

    Args:
      evaluate: ``k int32 -> (loss float32, aux pytree)``: the true loss of candidate ``k``.
      n: int32 (may be traced), the number of possible moves (``zero <= n <= n_max``).
      n_max: static upper bound of ``n``; fixes the number of bisection steps.
      margin: success means ``loss < -margin``.
      zero: the zero-change candidate's index: ``0``, or ``-1`` when the quantizer's zero change (the
        input itself) is not candidate 0 of its family (``evaluate(-1)`` must then return it).

    Returns:
      :class:`SearchResult`.
    """
    n = jnp.asarray(n, jnp.int32)
    zero_k = jnp.int32(zero)
    l_t, a_t = jax.eval_shape(evaluate, zero_k)
    blank = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (l_t, a_t))

    def body(i, c):
        lo, hi, l_hi, a_hi, l0, a0, ln, an = c  # after step 1: loss(lo) failed, loss(hi) succeeded
        bisect = (i >= 2) & (l0 >= -margin) & (ln < -margin) & (hi - lo > 1)
        k = jnp.where(i == 0, zero_k, jnp.where(i == 1, n, jnp.where(bisect, (lo + hi) // 2, hi)))
        l_k, a_k = evaluate(k)
        ok = bisect & (l_k < -margin)
        l0, a0 = jnp.where(i == 0, l_k, l0), _pick(i == 0, a_k, a0)
        ln, an = jnp.where(i == 1, l_k, ln), _pick(i == 1, a_k, an)
        l_hi, a_hi = jnp.where(ok | (i == 1), l_k, l_hi), _pick(ok | (i == 1), a_k, a_hi)
        return (jnp.where(bisect & ~ok, k, lo), jnp.where(ok, k, hi), l_hi, a_hi, l0, a0, ln, an)

    steps = 2 + bisection_steps(n_max + 1)
    init = (zero_k, n, *blank, *blank, *blank)
    _, hi, l_hi, a_hi, l0, a0, ln, an = jax.lax.fori_loop(0, steps, body, init)
    ok0, okn = l0 < -margin, ln < -margin
    # Neither end succeeds: return the lower loss of the two (the best reached).
    zero_better = l0 <= ln
    k = jnp.where(ok0, zero_k, jnp.where(okn, hi, jnp.where(zero_better, zero_k, n)))
    loss = jnp.where(ok0, l0, jnp.where(okn, l_hi, jnp.minimum(l0, ln)))
    aux = _pick(ok0, a0, _pick(okn, a_hi, _pick(zero_better, a0, an)))
    return SearchResult(k, loss, aux, ok0 | okn, ok0, jnp.int32(steps))


def limit_flips(distortion_of: Callable[[jax.Array], jax.Array], n: jax.Array, n_max: int,
                limit: float, *, zero: int = 0) -> tuple[jax.Array, jax.Array]:
    """Largest ``k`` in ``[zero, n]`` whose candidate's distortion is ``<= limit`` (bisection, no model).

    Args:
      distortion_of: ``k -> float32`` distortion (e.g. L2 in pixel units), non-decreasing in ``k``
        up to rounding; the bisection keeps ``lo`` a verified feasible ``k``.
      n, n_max, zero: as in :func:`search_flips`.
      limit: static; ``inf`` returns ``(n, True)`` without evaluating anything.

    Returns:
      ``(k_cap int32, feasible bool)``; ``feasible`` is False when even ``k = zero`` exceeds the limit
      (then ``k_cap = zero``).
    """
    n = jnp.asarray(n, jnp.int32)
    if math.isinf(limit):
        return n, jnp.bool_(True)
    zero_k = jnp.int32(zero)
    feasible = distortion_of(zero_k) <= limit
    all_ok = distortion_of(n) <= limit

    def body(_, carry):
        lo, hi = carry  # lo within the limit, hi beyond it
        active = hi - lo > 1
        mid = (lo + hi) // 2
        ok = distortion_of(mid) <= limit
        return jnp.where(active & ok, mid, lo), jnp.where(active & ~ok, mid, hi)

    lo, _ = jax.lax.fori_loop(0, bisection_steps(n_max + 1), body, (zero_k, n))
    return jnp.where(feasible, jnp.where(all_ok, n, lo), zero_k), feasible
