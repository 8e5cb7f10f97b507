"""The quantizers' search over how many switching points are passed (the candidate index ``k``).

Both quantizers order their per-entry moves by switching point (``lambda_j``) and build candidate ``k``
by applying the ``k`` first moves; ``k = 0`` is the smallest change they consider. The true loss of a
candidate (the model on the exact file, worst case over the re-encoder set) is not monotone in ``k``,
so the search only ever returns a candidate it evaluated:

1. the zero-change candidate first (``k = 0``, or ``k = -1`` when the input itself is not candidate
   0): if it succeeds it is returned;
2. ``k = n`` (all moves): if it fails too, the candidate of the two with the lower loss is returned
   (the best the quantizer reached, ``success = False``);
3. otherwise the bracket ``(lo, hi)`` - ``lo`` a verified failure, ``hi`` a verified success - is
   narrowed until ``hi - lo <= max(1, rtol * hi)``; every success seen lowers ``hi``, so the result is
   the smallest successful ``k`` evaluated.

Step 3 is the ITP method (Interpolate, Truncate, Project: I. F. D. Oliveira, R. H. C. Takahashi, "An
Enhancement of the Bisection Method Average Performance Preserving Minmax Optimality", ACM Trans.
Math. Softw. 47(1), 2020): each step takes the point where the loss, interpolated linearly between the
bracket's ends, crosses ``-margin``, pulls it towards the midpoint (truncation) and keeps it within the
radius that guarantees at most one step more than bisection (projection, ``n0 = 1``); an end kept
twice in a row has its loss scaled down for the interpolation (the Anderson-Bjorck rule). The
interpolation runs in the coordinate of the quantizer's first-order loss prediction (``predict``:
``<g, candidate(k)>``, along which the true loss is close to linear), and the candidate for an
interpolated prediction is found by a bisection on ``predict`` alone (no model evaluation). On the
quantizers' losses this closes the bracket in a few steps where bisection needs ``log2(n)`` (about 20
for a 384x512 image), and on any loss, however noisy, it needs at most one step more than bisection:
``3 + ceil(log2(n_max + 1))`` candidates (:func:`max_evaluations`).

A distortion limit is a cap on ``k`` found first by :func:`limit_flips` (no model evaluation: distortion
grows with ``k``). Everything is ``lax`` loops traced once (one compile per shape). The search is a
``lax.while_loop``: run image by image (``lax.map``, the CPU engine) each image stops when its own
bracket closes; under ``vmap`` the batch runs until its last image closes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

#: ITP constants (Oliveira & Takahashi 2020, section 3): truncation ``delta = KAPPA1 * w**2 / w0`` of a
#: bracket of width ``w`` (start width ``w0``), and ``n0 = 1`` extra step over bisection's worst case.
#: The paper's suggestion, 0.2, pulled the first interpolated point back to the midpoint on most photos
#: (the prediction is good there); 0.02 cut the candidates by a third on the photos of
#: benchmarks/quantize_search.py at the same PSNR (docs/quantize.md, "Search cost").
KAPPA1 = 0.02
N0 = 1

#: Default relative width at which the bracket counts as closed (``rtol`` of :func:`search_flips`).
#: Candidates ``hi`` and ``hi * (1 - RTOL)`` differ by that share of their moved entries: below the
#: PSNR resolution the results report (docs/quantize.md, "Search cost").
RTOL = 1.0 / 256

#: ``method`` values of :func:`search_flips`.
SEARCH_METHODS = ("itp", "bisection")


class SearchResult(NamedTuple):
    """Outcome of :func:`search_flips` (scalars, plus the evaluated candidate's ``aux``).

    Attributes:
      k: int32, the chosen candidate.
      loss: float32, its true loss.
      aux: whatever ``evaluate`` returned with the loss for that candidate (e.g. per-member scores).
      success: bool, ``loss < -margin``.
      zero_ok: bool, the zero-change candidate (``k = zero``) succeeded (it is then the result).
      evaluations: int32, candidates evaluated for this image.
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


def max_evaluations(n_max: int) -> int:
    """The most candidates :func:`search_flips` evaluates for ``n_max`` moves: the zero change, all
    moves, and the ITP worst case (bisection's ``ceil(log2(n_max + 1))`` plus ``N0``)."""
    return 2 + bisection_steps(n_max + 1) + N0


def _pick(c, a, b):
    return jax.tree.map(lambda x, y: jnp.where(c, x, y), a, b)


def _first_at_or_below(predict: Callable[[jax.Array], jax.Array], lo: jax.Array, hi: jax.Array, p: jax.Array,
                       steps: int) -> jax.Array:
    """Smallest ``k`` in ``(lo, hi]`` with ``predict(k) <= p`` (``predict`` non-increasing; ``hi`` if none)."""

    def body(_, c):
        a, b = c  # predict(a) > p (or a = lo), predict(b) <= p (or b = hi)
        m = (a + b) // 2
        below = predict(m) <= p
        active = b - a > 1
        return jnp.where(active & ~below, m, a), jnp.where(active & below, m, b)

    return jax.lax.fori_loop(0, steps, body, (lo, hi))[1]


def _itp_point(lo, hi, f_lo, f_hi, p_lo, p_hi, j, w0, n_itp, predict, inner_steps):
    """The ITP candidate strictly inside ``(lo, hi)`` (module docstring); ``j`` counts bracket steps.

    ``f_lo >= 0 > f_hi`` are the ends' losses relative to the target, as weighted by the Illinois rule.
    """
    width = (hi - lo).astype(jnp.float32)
    mid = (lo + hi).astype(jnp.float32) / 2.0
    # Interpolate: the prediction where the loss line through both ends crosses the target, then the
    # candidate with that prediction. A flat or inverted segment gives no information: use the midpoint.
    valid = (f_lo - f_hi > 0) & (p_hi < p_lo)
    t = jnp.clip(f_lo / jnp.where(valid, f_lo - f_hi, 1.0), 0.0, 1.0)
    p_star = p_lo + t * (p_hi - p_lo)
    k_f = jnp.where(valid, _first_at_or_below(predict, lo, hi, p_star, inner_steps).astype(jnp.float32), mid)
    # Truncate towards the midpoint, then project into the minmax radius (epsilon = 1/2: adjacency).
    sigma = jnp.sign(mid - k_f)
    delta = KAPPA1 * width * width / jnp.maximum(w0, 1.0)
    x_t = jnp.where(delta <= jnp.abs(mid - k_f), k_f + sigma * delta, mid)
    r = 0.5 * jnp.exp2((n_itp - j).astype(jnp.float32)) - width / 2.0
    x = jnp.where(jnp.abs(x_t - mid) <= r, x_t, mid - sigma * r)
    return jnp.clip(jnp.round(x).astype(jnp.int32), lo + 1, hi - 1)


def search_flips(evaluate: Callable[[jax.Array], tuple[jax.Array, Any]], n: jax.Array, n_max: int, margin: float,
                 *, zero: int = 0, predict: Callable[[jax.Array], jax.Array] | None = None,
                 rtol: float = RTOL, method: str = "itp") -> SearchResult:
    """Smallest evaluated ``k`` in ``[zero, n]`` with ``loss < -margin`` (module docstring for the order).

    All evaluations run in one ``lax.while_loop`` body (step 0: ``k = zero``, step 1: ``k = n``, then
    the ITP steps), so ``evaluate`` is traced once: compile time does not grow with the number of phases.

    Args:
      evaluate: ``k int32 -> (loss float32, aux pytree)``: the true loss of candidate ``k``.
      n: int32 (may be traced), the number of possible moves (``zero <= n <= n_max``).
      n_max: static upper bound of ``n``; fixes the most steps (:func:`max_evaluations`).
      margin: success means ``loss < -margin``.
      zero: the zero-change candidate's index: ``0``, or ``-1`` when the quantizer's zero change (the
        input itself) is not candidate 0 of its family (``evaluate(-1)`` must then return it).
      predict: ``k int32 -> float32``, a prediction of the loss (up to a constant) that does not
        increase with ``k >= 0``, e.g. the first-order ``<g, candidate(k)>``; it must be cheap (it runs
        ``log2(n_max)`` times per step). ``None``: interpolate in ``k`` itself (``predict(k) = -k``).
      rtol: the bracket is closed when ``hi - lo <= max(1, rtol * hi)``; ``0`` narrows it to adjacent
        candidates.
      method: ``"itp"`` (default) or ``"bisection"`` (the midpoint each step: the papers' search, and
        with ``rtol=0`` exactly the search before issue 14).

    Raises:
      ValueError: ``rtol`` outside ``[0, 1)`` or an unknown ``method``.

    Returns:
      :class:`SearchResult`.
    """
    if not 0.0 <= rtol < 1.0:
        raise ValueError(f"rtol must be in [0, 1), got {rtol}")
    if method not in SEARCH_METHODS:
        raise ValueError(f"method must be one of {SEARCH_METHODS}, got {method!r}")
    if predict is None:
        predict = lambda k: -jnp.asarray(k, jnp.float32)
    n = jnp.asarray(n, jnp.int32)
    zero_k = jnp.int32(zero)
    target = jnp.float32(-margin)
    l_t, a_t = jax.eval_shape(evaluate, zero_k)
    blank_l, blank_a = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (l_t, a_t))
    steps = max_evaluations(n_max)
    inner = bisection_steps(n_max + 1)
    f32 = jnp.float32

    def closed(lo, hi):
        return hi - lo <= jnp.maximum(1, jnp.floor(rtol * hi.astype(f32)).astype(jnp.int32))

    # Loop invariants of the ITP projection: the first bracket's width and its minmax step count.
    w0 = (n - zero_k).astype(f32)
    n_itp = jnp.ceil(jnp.log2(jnp.maximum(w0, 1.0))).astype(jnp.int32) + N0

    def running(c):
        i, lo, hi, _, _, _, _, _, _, l0, _, ln, _, _ = c
        decided = (i >= 1) & (l0 < target)  # the zero change succeeded
        decided |= (i >= 2) & (~(ln < target) | closed(lo, hi))  # all moves fail (or NaN), or the bracket closed
        return (i < steps) & ~decided

    def body(c):
        i, lo, hi, f_lo, f_hi, p_lo, p_hi, last, l_hi, l0, a0, ln, an, a_hi = c
        if method == "itp":
            k_itp = _itp_point(lo, hi, f_lo, f_hi, p_lo, p_hi, i - 2, w0, n_itp, predict, inner)
        else:
            k_itp = (lo + hi) // 2
        k = jnp.where(i == 0, zero_k, jnp.where(i == 1, n, k_itp))
        l_k, a_k = evaluate(k)
        p_k, f_k = predict(k).astype(f32), (l_k - target).astype(f32)
        ok = l_k < target
        first, second, step = i == 0, i == 1, i >= 2
        l0, a0 = jnp.where(first, l_k, l0), _pick(first, a_k, a0)
        ln, an = jnp.where(second, l_k, ln), _pick(second, a_k, an)
        # Step 0 sets the failing end, step 1 the succeeding end; later steps replace the end they land
        # on. An end kept twice in a row has its loss scaled down for the interpolation (Anderson & Bjorck
        # 1973, BIT 13: by 1 - f_new / f_replaced, or 1/2), so a convex loss does not pin the point to one side.
        to_lo = first | (step & ~ok)
        to_hi = second | (step & ok)
        m_lo = 1.0 - f_k / jnp.where(f_lo != 0, f_lo, 1.0)  # Anderson-Bjorck weight for a kept hi
        m_hi = 1.0 - f_k / jnp.where(f_hi != 0, f_hi, 1.0)  # ... and for a kept lo
        f_hi = jnp.where(step & to_lo & (last == 1), jnp.where(m_lo > 0, m_lo, 0.5) * f_hi, f_hi)
        f_lo = jnp.where(step & to_hi & (last == 2), jnp.where(m_hi > 0, m_hi, 0.5) * f_lo, f_lo)
        lo, f_lo, p_lo = jnp.where(to_lo, k, lo), jnp.where(to_lo, f_k, f_lo), jnp.where(to_lo, p_k, p_lo)
        hi, f_hi, p_hi = jnp.where(to_hi, k, hi), jnp.where(to_hi, f_k, f_hi), jnp.where(to_hi, p_k, p_hi)
        last = jnp.where(step, jnp.where(ok, 2, 1), 0).astype(jnp.int32)
        l_hi, a_hi = jnp.where(to_hi, l_k, l_hi), _pick(to_hi, a_k, a_hi)
        return (i + 1, lo, hi, f_lo, f_hi, p_lo, p_hi, last, l_hi, l0, a0, ln, an, a_hi)

    zf = f32(0)
    init = (jnp.int32(0), zero_k, n, zf, zf, zf, zf, jnp.int32(0), blank_l, blank_l, blank_a, blank_l, blank_a, blank_a)
    i, _, hi, _, _, _, _, _, l_hi, l0, a0, ln, an, a_hi = jax.lax.while_loop(running, body, init)
    ok0, okn = l0 < target, ln < target
    # Neither end succeeds: return the lower loss of the two (the best reached).
    zero_better = l0 <= ln
    k = jnp.where(ok0, zero_k, jnp.where(okn, hi, jnp.where(zero_better, zero_k, n)))
    loss = jnp.where(ok0, l0, jnp.where(okn, l_hi, jnp.minimum(l0, ln)))
    aux = _pick(ok0, a0, _pick(okn, a_hi, _pick(zero_better, a0, an)))
    return SearchResult(k, loss, aux, ok0 | okn, ok0, i)


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
