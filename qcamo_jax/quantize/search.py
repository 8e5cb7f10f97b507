"""The quantizers' search over how many switching points are passed (the candidate index ``k``).

Both quantizers order their per-entry moves by switching point (``lambda_j``) and build candidate ``k``
by applying the ``k`` first moves; ``k = 0`` is the smallest change they consider. The true loss of a
candidate (the model on the exact file, worst case over the re-encoder set) is not monotone in ``k``,
so the search only ever returns a candidate it evaluated:

1. ``k = 0`` first: if it succeeds it is returned (nothing more is needed);
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
      evaluations: int32, candidates evaluated (static: the compiled program's count).
    """

    k: jax.Array
    loss: jax.Array
    aux: Any
    success: jax.Array
    evaluations: jax.Array


def bisection_steps(n: int) -> int:
    """Number of halvings that reduce an interval of length ``n`` to adjacent points (>= 1)."""
    return max(1, math.ceil(math.log2(max(n, 1))))


def _pick(c, a, b):
    return jax.tree.map(lambda x, y: jnp.where(c, x, y), a, b)


def search_flips(evaluate: Callable[[jax.Array], tuple[jax.Array, Any]], n: jax.Array, n_max: int, margin: float,
                 *, first: tuple[jax.Array, Any] | None = None) -> SearchResult:
    """Smallest evaluated ``k`` in ``[0, n]`` with ``loss < -margin`` (module docstring for the order).

    Args:
      evaluate: ``k int32 -> (loss float32, aux pytree)``: the true loss of candidate ``k``.
      n: int32 (may be traced), the number of possible moves (``n <= n_max``).
      n_max: static upper bound of ``n``; fixes the number of bisection steps.
      margin: success means ``loss < -margin``.
      first: ``evaluate(0)`` if the caller already has it (saves one evaluation).

    Returns:
      :class:`SearchResult`.
    """
    n = jnp.asarray(n, jnp.int32)
    l0, a0 = evaluate(jnp.int32(0)) if first is None else first
    ln, an = evaluate(n)
    ok0, okn = l0 < -margin, ln < -margin

    def body(_, carry):
        lo, hi, l_hi, a_hi = carry  # loss(lo) failed, loss(hi) succeeded
        active = hi - lo > 1
        mid = jnp.where(active, (lo + hi) // 2, hi)
        l_mid, a_mid = evaluate(mid)
        ok = active & (l_mid < -margin)
        return (jnp.where(active & ~ok, mid, lo), jnp.where(ok, mid, hi), jnp.where(ok, l_mid, l_hi),
                _pick(ok, a_mid, a_hi))

    steps = bisection_steps(n_max)
    _, hi, l_hi, a_hi = jax.lax.fori_loop(0, steps, body, (jnp.int32(0), n, ln, an))
    # Neither end succeeds: return the lower loss of the two (the best reached).
    zero_better = l0 <= ln
    k = jnp.where(ok0, 0, jnp.where(okn, hi, jnp.where(zero_better, 0, n)))
    loss = jnp.where(ok0, l0, jnp.where(okn, l_hi, jnp.minimum(l0, ln)))
    aux = _pick(ok0, a0, _pick(okn, a_hi, _pick(zero_better, a0, an)))
    evaluations = jnp.int32(steps + (2 if first is None else 1))
    return SearchResult(k, loss, aux, ok0 | okn, evaluations)


def limit_flips(distortion_of: Callable[[jax.Array], jax.Array], n: jax.Array, n_max: int,
                limit: float) -> tuple[jax.Array, jax.Array]:
    """Largest ``k`` in ``[0, n]`` whose candidate's distortion is ``<= limit`` (bisection, no model).

    Args:
      distortion_of: ``k -> float32`` distortion (e.g. L2 in pixel units), non-decreasing in ``k``
        up to rounding; the bisection keeps ``lo`` a verified feasible ``k``.
      n, n_max: as in :func:`search_flips`.
      limit: static; ``inf`` returns ``(n, True)`` without evaluating anything.

    Returns:
      ``(k_cap int32, feasible bool)``; ``feasible`` is False when even ``k = 0`` exceeds the limit
      (then ``k_cap = 0``).
    """
    n = jnp.asarray(n, jnp.int32)
    if math.isinf(limit):
        return n, jnp.bool_(True)
    feasible = distortion_of(jnp.int32(0)) <= limit
    all_ok = distortion_of(n) <= limit

    def body(_, carry):
        lo, hi = carry  # lo within the limit, hi beyond it
        active = hi - lo > 1
        mid = (lo + hi) // 2
        ok = distortion_of(mid) <= limit
        return jnp.where(active & ok, mid, lo), jnp.where(active & ~ok, mid, hi)

    lo, _ = jax.lax.fori_loop(0, bisection_steps(n_max), body, (jnp.int32(0), n))
    return jnp.where(feasible, jnp.where(all_ok, n, lo), 0), feasible
