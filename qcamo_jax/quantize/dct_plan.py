"""The candidates of the DCT-domain quantizer: plain-JPEG coefficients, a direction, sorted switching points.

Data contract: one image (no batch axis): ``original`` ``uint8 [H, W, 3]``, ``adversarial`` ``float32
[H, W, 3]`` pixels in [0, 255]; coefficients flattened over Y, Cb, Cr (``[N]``, in steps of the written
file's quantization tables). :func:`plan_dct` builds a :class:`DCTPlan` once per image;
:func:`plan_candidate` gives candidate ``k`` (the ``k`` first switching points passed) and
:func:`plan_prediction` its first-order loss change. The rules (``"gradient"``, ``"attack"``,
``"bracket"``) and their sources are in :mod:`qcamo_jax.quantize.dct`, which searches over ``k``.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from qcamo_jax.jpeg import codec, tables
from qcamo_jax.quantize import survival
from qcamo_jax.quantize.spatial import ScoreFn, check_common

DCT_METHODS = ("islow", "ifast")
#: ``DCTConfig.candidates`` values.
CANDIDATES = ("gradient", "attack", "bracket")


def _flat(parts) -> jax.Array:
    return jnp.concatenate([jnp.ravel(p) for p in parts])


def _unflat(flat: jax.Array, like) -> tuple:
    out, i = [], 0
    for p in like:
        out.append(flat[i : i + p.size].reshape(p.shape))
        i += p.size
    return tuple(out)


class DCTPlan(NamedTuple):
    """Everything the bisection of one image needs (flat over the Y, Cb, Cr coefficients).

    Attributes:
      plain: :class:`~qcamo_jax.jpeg.codec.JpegCoefficients` the target encoder writes for the original.
      z0: int32 ``[N]`` the ``lambda = 0`` integers, flattened (plain JPEG for ``"gradient"`` and
        ``"attack"``).
      r: float32 ``[N]`` ``c / Delta - z0``: where the unquantized coefficient sits in its bin.
      delta: float32 ``[N]`` quantization step (DCT units).
      direction: int32 ``[N]`` ``-sign(g)``: the step each coefficient takes (``g``: the loss gradient,
        or ``-2 u Delta / step`` for ``"attack"``).
      abs_g: float32 ``[N]`` ``|g|`` (1 where ``g = 0``).
      rank: int32 ``[N]`` order of each coefficient's switching point.
      sorted_lam: float32 ``[N]`` switching points, ascending (``inf`` where ``g = 0``).
      n_active: int32, coefficients with a non-zero ``g``.
      gradients: int32, gradient passes the plan made (0 or 1).
    """

    plain: codec.JpegCoefficients
    z0: jax.Array
    r: jax.Array
    delta: jax.Array
    direction: jax.Array
    abs_g: jax.Array
    rank: jax.Array
    sorted_lam: jax.Array
    n_active: jax.Array
    gradients: jax.Array


def plan_dct(score_fn: ScoreFn, variables: Mapping[str, Any], original: jax.Array, adversarial: jax.Array,
             config: Any, gradient: jax.Array | None = None) -> DCTPlan:
    """Plain-JPEG coefficients of ``original``, the direction (the attack's change, or the loss gradient
    at ``adversarial``: ``config.candidates``), sorted switching points.

    Args:
      config: a :class:`qcamo_jax.quantize.dct.DCTConfig` (not imported here: that module imports this one).
      gradient: float32 ``[N]``, for ``"bracket"``: the ``g`` that orders the roundings, instead of the
        loss gradient (a gradient pass through the set), e.g. the attack plan's ``-direction * abs_g``.

    Raises:
      ValueError: an unknown ``dct_method`` or ``candidates``, or ``max_steps < 1``.
    """
    if config.dct_method not in DCT_METHODS:
        raise ValueError(f"dct_method must be one of {DCT_METHODS}, got {config.dct_method!r}")
    if config.max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {config.max_steps}")
    if config.candidates not in CANDIDATES:
        raise ValueError(f"candidates must be one of {CANDIDATES}, got {config.candidates!r}")
    emus = check_common(config.margin, config.survive, config.gradient).emulations(config.subsampling)
    h, w = original.shape[:2]
    sub = config.subsampling
    plain = codec.encode(original, config.quality, dct_method=config.dct_method, subsampling=sub)
    fwd = codec.forward_dct(original, config.quality, dct_method=config.dct_method, subsampling=sub)
    z0 = _flat(plain.components)
    r = _flat(fwd.ratio) - z0.astype(jnp.float32)
    delta = _flat([jnp.broadcast_to(q, c.shape) for q, c in zip(plain.tables, plain.components)]).astype(jnp.float32)
    step = _flat([jnp.broadcast_to(st, c.shape) for st, c in zip(fwd.step, plain.components)])  # u's DCT units per step
    ca = codec.forward_dct_float(jnp.clip(jnp.asarray(adversarial, jnp.float32), 0.0, 255.0), subsampling=sub)
    u = _flat(ca) - _flat(codec.forward_dct_float(jnp.asarray(original, jnp.float32), subsampling=sub))

    def loss_gradient():
        # Gradient of the loss with respect to the DCT values (DCT units) at the attacked image.
        return _flat(jax.grad(lambda c: survival.smooth_score(
            score_fn, variables, codec.decode_float(c, height=h, width=w, subsampling=sub), emus, config.gradient))(ca))

    if config.candidates == "attack":
        # The attack's own change as the direction: z = round(c / Delta + lambda u / Delta), i.e. the
        # gradient rule with g = -2 u (lambda = 1 is the attacked image, in this DCT's units). An attack
        # that did not move (the image already met T - margin on the score it attacked) gives no
        # direction, while a re-encoder may still lift the file above T: the loss gradient then. Run
        # image by image (batch of one, quantize_dct) only that image pays for it; under vmap (a
        # batch) XLA computes both branches.
        moved = jnp.any(u != 0)
        g = jax.lax.cond(moved, lambda: -2.0 * u * delta / step, loss_gradient)
        gradients = jnp.where(moved, 0, 1).astype(jnp.int32)
    elif gradient is not None and config.candidates == "bracket":
        g, gradients = jnp.asarray(gradient, jnp.float32), jnp.int32(0)
    else:
        g = loss_gradient()
        gradients = jnp.int32(1)
    abs_g = jnp.where(g != 0, jnp.abs(g), 1.0)
    if config.candidates in ("gradient", "attack"):
        s = -jnp.sign(g)
        active = g != 0
        lam_j = jnp.where(active, 2.0 * delta * jnp.maximum(0.5 - s * r, 0.0) / abs_g, jnp.inf)
        base = z0
    else:
        # Bracket of the attacked coefficient, in the encoder's step units, clamped around plain JPEG.
        a = _flat(fwd.ratio) + u / step
        lo = jnp.clip(jnp.floor(a), z0 - config.max_steps, z0 + config.max_steps)
        hi = jnp.clip(jnp.floor(a) + 1, z0 - config.max_steps, z0 + config.max_steps)
        c0 = _flat(fwd.ratio)
        lo_cost, hi_cost = (lo - c0) ** 2, (hi - c0) ** 2
        base_f = jnp.where(lo_cost <= hi_cost, lo, hi)
        alt_f = jnp.where(lo_cost <= hi_cost, hi, lo)
        move = alt_f - base_f  # -1, 0 or +1
        active = (move != 0) & (g * move < 0)
        extra = delta * (jnp.abs(hi_cost - lo_cost))  # (Delta^2 * cost difference) / Delta
        lam_j = jnp.where(active, extra / abs_g, jnp.inf)
        base = base_f.astype(jnp.int32)
        s = jnp.where(active, move, 0.0)
        r = jnp.zeros_like(r)  # one step at most: the step count formula below then always gives 1
    order = jnp.argsort(lam_j)
    rank = jnp.empty_like(order).at[order].set(jnp.arange(order.size, dtype=order.dtype))
    return DCTPlan(plain, base, r, delta, s.astype(jnp.int32), abs_g, rank, lam_j[order], jnp.sum(active, dtype=jnp.int32),
                   gradients)


def _steps(plan: DCTPlan, k: jax.Array, max_steps: int):
    """``(lambda, steps int32 [N])`` of candidate ``k``: where each coefficient's minimiser lies (>= 1 once moved)."""
    lam = jnp.where(k > 0, plan.sorted_lam[jnp.maximum(k - 1, 0)], 0.0)
    # Steps taken at lambda along the direction: floor(s r + lambda |g| / (2 Delta) + 1/2).
    pos = plan.direction * plan.r + lam * plan.abs_g / (2.0 * plan.delta)
    return lam, jnp.clip(jnp.floor(pos + 0.5), 1, max_steps).astype(jnp.int32)


def plan_prediction(plan: DCTPlan, k: jax.Array, max_steps: int = 1) -> jax.Array:
    """First-order loss change of candidate ``k`` against the ``lambda = 0`` one: ``g . (z(k) - z0) Delta``.

    Every move goes against the gradient, so this is ``-sum |g_j| steps_j Delta_j`` over the moved
    coefficients: non-increasing in ``k`` (the search's interpolation coordinate,
    :func:`qcamo_jax.quantize.search.search_flips`); ``0`` for ``k <= 0``. The clip to the baseline
    range (:func:`plan_candidate`) is ignored: it only shortens a few moves.
    """
    _, steps = _steps(plan, k, max_steps)
    gain = plan.abs_g * plan.delta * steps.astype(jnp.float32)
    return -jnp.sum(jnp.where(plan.rank < k, gain, 0.0))


def plan_candidate(plan: DCTPlan, k: jax.Array, max_steps: int = 1):
    """The coefficients with the ``k`` first switching points passed: ``(JpegCoefficients, lambda)``."""
    lam, steps = _steps(plan, k, max_steps)
    z = plan.z0 + jnp.where(plan.rank < k, plan.direction * steps, 0)
    # A step past the range a baseline 8-bit JPEG holds (e.g. DC -1024 of a black block at q = 1) is
    # a coefficient no encoder could give back: clip to it (tables.coefficient_range).
    ranges = [tables.coefficient_range(q) for q in plan.plain.tables]
    lo = _flat([jnp.broadcast_to(r[0], c.shape) for r, c in zip(ranges, plan.plain.components)])
    hi = _flat([jnp.broadcast_to(r[1], c.shape) for r, c in zip(ranges, plan.plain.components)])
    z = jnp.clip(z, lo, hi)
    return plan.plain.replace(**dict(zip(("y", "cb", "cr"), _unflat(z, plan.plain.components)))), lam
