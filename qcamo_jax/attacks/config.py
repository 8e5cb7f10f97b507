"""Attack configurations (static, hashable) and the result pytree every attack returns.

Configs are frozen dataclasses: they hold Python numbers and optax transforms only, so they can be
closed over or passed as static arguments to ``jax.jit``; anything that varies per image (targets,
budgets, keys) is an array argument instead, so changing it never re-traces.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import optax

NORMS = ("l2", "linf")
SCHEDULES = ("constant", "cosine")


class AttackResult(NamedTuple):
    """Per-image outcome of an attack; every field has the batch on axis 0.

    Attributes:
      score: ``float32 [B]`` score of the returned image, as the attack sees it (through the
        transform, if one was given).
      l2: ``float32 [B]`` ``||x_adv - x||_2`` in pixel units (over all H*W*3 values).
      linf: ``float32 [B]`` ``max |x_adv - x|`` in pixel units.
      budget: ``float32 [B]`` the budget (in the attack's norm) of the run that produced ``x_adv``;
        for the budget search, the smallest budget that succeeded (``eps_max``-bounded).
      success: ``bool [B]`` ``score - target + margin < 0``.
      iterations: ``int32 [B]`` gradient evaluations spent on this image (early-stopped iterations
        are not counted).
    """

    score: jax.Array
    l2: jax.Array
    linf: jax.Array
    budget: jax.Array
    success: jax.Array
    iterations: jax.Array


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; use one of {NORMS}")


@dataclasses.dataclass(frozen=True)
class PGDConfig:
    """Projected gradient descent on ``L(x) = Q(x) - T + margin`` (Madry et al. 2018), pixel units.

    Attributes:
      norm: ``"l2"`` (the paper) or ``"linf"``.
      eps: default budget in pixel units when no per-image budget is given.
      steps: maximum number of gradient steps.
      step_scale: step size ``alpha = step_scale * eps / steps`` (Madry et al.'s 2.5: the iterate can
        cross the ball and come back). Scaled by the budget, so it needs no retuning per budget.
      schedule: ``"cosine"``: ``alpha_k = alpha * (1 + cos(pi k / steps)) / 2`` (annealed steps as in
        DDN, Rony et al. 2019: large moves first, then local refinement), or ``"constant"`` (Madry et
        al.). Cosine is the default because it reached the target on more images for the same number
        of gradients (docs/attacks.md, "Choosing the PGD iterations").
      random_start: start from a random point of the ball (needs a PRNG key) instead of the image.
      early_stop: stop an image (it stops changing) at the first iterate with ``L < 0``.
      margin: go below ``T - margin`` (see :func:`qcamo_jax.attacks.losses.quality_loss`).
      gradient: optional ``optax.GradientTransformation`` applied to ``dL/dx`` (momentum, Adam...);
        see :mod:`qcamo_jax.attacks.steps`.
      normalize: append the norm's steepest-descent map (sign / L2 normalisation) after ``gradient``.
      pixel_range: valid pixel interval; every iterate is clipped to it.
    """

    norm: str = "l2"
    eps: float = 1000.0
    steps: int = 10
    step_scale: float = 2.5
    schedule: str = "cosine"
    random_start: bool = False
    early_stop: bool = True
    margin: float = 0.0
    gradient: optax.GradientTransformation | None = None
    normalize: bool = True
    pixel_range: tuple[float, float] = (0.0, 255.0)

    def __post_init__(self):
        _check_norm(self.norm)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; use one of {SCHEDULES}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if self.pixel_range[0] >= self.pixel_range[1]:
            raise ValueError(f"empty pixel_range {self.pixel_range}")


@dataclasses.dataclass(frozen=True)
class FGSMConfig:
    """One signed (Linf) or normalised (L2, "fast gradient method") step of size ``eps``.

    Attributes:
      norm: ``"linf"`` (Goodfellow et al. 2015) or ``"l2"``.
      eps: step = budget, pixel units.
      margin: see :class:`PGDConfig`.
      gradient: optional optax transform applied before the norm's steepest-descent map.
      pixel_range: valid pixel interval.
    """

    norm: str = "linf"
    eps: float = 4.0
    margin: float = 0.0
    gradient: optax.GradientTransformation | None = None
    pixel_range: tuple[float, float] = (0.0, 255.0)

    def __post_init__(self):
        _check_norm(self.norm)


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """The paper's per-image search over the budget in ``(0, eps_max]``, one PGD run per try.

    Attributes:
      pgd: the PGD run for each try (its ``eps`` is ignored: each try sets its own budget).
      eps_max: upper end of the search interval (pixel units; 2000 for L2 as in the paper).
      bisection_steps: the most tries (7 in the paper). A success sets ``hi`` to the distortion it
        reached, a failure sets ``lo`` to its budget; ``budget`` says where the next try goes.
      refine_steps: after the search, bisection on ``t in [0, 1]`` for the smallest ``t`` such that
        ``x + t * (x_adv - x)`` is still adversarial (forward passes only, not counted in
        ``iterations``; 0 gives the paper's search alone). With 7 tries the bisection alone resolves
        the budget to a few percent of small optima (2.7% above a known optimum of L2 = 40 in the tests);
        8 refinement steps (about 3 gradients' worth of forward passes) bring it under 0.5%.
      warm_start: start try ``k > 0`` from the previous tries' work instead of from the original image
        (the paper's code): until the first success from the last try's final iterate (the next, larger
        ball contains it, so PGD continues where it stopped), after it from the smallest success shrunk
        into the new, smaller ball.
      first_guess: if > 0, the first try's budget is ``first_guess * L(x) / ||dL/dx||_*`` (clipped to
        ``(0, eps_max]``) instead of ``eps_max / 2``: ``L / ||g||_*`` is the distortion a linear model of
        the loss needs to reach 0 (dual norm: L2 for ``"l2"``, L1 for ``"linf"``). Costs one gradient
        (counted in ``iterations``), which the first try's first PGD step then reuses. 0 keeps the
        paper's first try.
      rtol: stop an image's tries once it has succeeded and its bracket is tight, ``hi - lo <= rtol *
        hi`` (the remaining tries could lower its distortion by at most that fraction). 0 runs every try.
      budget: where the next try goes. ``"bisection"``: the middle of ``(lo, hi)`` (the paper; with
        ``first_guess``, doubling until the first success). ``"secant"``: the zero of the line through
        the last two failed ``(budget, loss)`` points (the first-order model ``L(x) - ||g||_* eps`` before
        any failure), aimed a little past it and kept inside the bracket
        (:data:`qcamo_jax.attacks.search.SECANT_AIM` and neighbours); without a falling line, bisection.

    Defaults, measured with ``benchmarks/attack_gradients.py`` (docs/attacks.md, "Gradients per image"):
    5 steps per try, ``first_guess=1.5``, ``rtol=0.12``, ``budget="secant"``: every target reached,
    13.9-18.7 gradients per image (the paper's procedure, :meth:`paper`: 44-63) at a mean L2 from 0.2%
    above to 11% below the paper's, on crops for the tiny random KonCept512 and the default model and on
    384x512 photos for the default model. :meth:`thorough` is the previous default (10 cosine steps, all 7
    tries): the lowest L2 on the rough tiny model, at 2.3x the gradients.
    """

    pgd: PGDConfig = PGDConfig(steps=5)
    eps_max: float = 2000.0
    bisection_steps: int = 7
    refine_steps: int = 8
    warm_start: bool = True
    first_guess: float = 1.5
    rtol: float = 0.12
    budget: str = "secant"

    @classmethod
    def paper(cls, pgd: PGDConfig | None = None, **overrides) -> "SearchConfig":
        """The paper's procedure: 10 constant PGD steps per try, 7 bisection tries each from the original image."""
        pgd = pgd or PGDConfig(steps=10, schedule="constant")
        return cls(**{**dict(pgd=pgd, warm_start=False, refine_steps=0, first_guess=0.0, rtol=0.0,
                             budget="bisection"), **overrides})

    @classmethod
    def thorough(cls, pgd: PGDConfig | None = None, **overrides) -> "SearchConfig":
        """The previous default: 10 cosine steps per try, all 7 bisection tries warm-started, refinement."""
        pgd = pgd or PGDConfig(steps=10)
        return cls(**{**dict(pgd=pgd, first_guess=0.0, rtol=0.0, budget="bisection"), **overrides})

    def __post_init__(self):
        if not self.first_guess >= 0:
            raise ValueError(f"first_guess must be >= 0, got {self.first_guess}")
        if not self.rtol >= 0:
            raise ValueError(f"rtol must be >= 0, got {self.rtol}")
        if self.bisection_steps < 1:
            raise ValueError(f"bisection_steps must be >= 1, got {self.bisection_steps}")
        if not self.eps_max > 0:
            raise ValueError(f"eps_max must be > 0, got {self.eps_max}")
        if self.refine_steps < 0:
            raise ValueError(f"refine_steps must be >= 0, got {self.refine_steps}")
        if self.budget not in ("bisection", "secant"):
            raise ValueError(f"budget must be 'bisection' or 'secant', got {self.budget!r}")
