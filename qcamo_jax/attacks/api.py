"""One compiled program per attack: ``make_attack`` closes over the score function and the static config.

The returned function ``run(variables, images, targets, key)`` is a single ``jax.jit`` of the batched
attack (loops are ``lax`` loops inside, so compile time does not grow with the number of steps). It
traces once per input shape/dtype; targets, keys, images and variables are ordinary array arguments.
To spread a batch over several devices, pass sharded ``images``/``targets``/keys (batch axis 0) or wrap
the un-jitted attack with :mod:`qcamo_jax.sharding`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax

from qcamo_jax.attacks.config import FGSMConfig, PGDConfig, SearchConfig
from qcamo_jax.attacks.fgsm import fgsm, ifgsm
from qcamo_jax.attacks.losses import ScoreFn, Transform
from qcamo_jax.attacks.pgd import pgd
from qcamo_jax.attacks.search import budget_search

METHODS: dict[str, tuple[Callable, Any]] = {
    "search": (budget_search, SearchConfig),
    "pgd": (pgd, PGDConfig),
    "ifgsm": (ifgsm, PGDConfig),
    "fgsm": (fgsm, FGSMConfig),
}


def attack_fn(score_fn: ScoreFn, method: str = "search", config=None, transform: Transform | None = None):
    """The un-jitted batched attack ``f(variables, images, targets, key) -> (adv, AttackResult)``.

    Use this to add your own transformations (``jax.jit``, sharding, ``chex.assert_max_traces``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown attack {method!r}; known: {sorted(METHODS)}")
    fn, config_cls = METHODS[method]
    if config is None and method != "ifgsm":
        config = config_cls()
    kwargs = {"transform": transform}
    return functools.partial(fn, score_fn, config=config, **kwargs)


def make_attack(score_fn: ScoreFn, method: str = "search", config=None, transform: Transform | None = None):
    """Jitted batched attack ``run(variables, images, targets, key) -> (adv, AttackResult)``.

    Args:
      score_fn: ``(variables, image float32 [H, W, 3] pixels) -> scalar``.
      method: ``"search"`` (the paper: PGD + budget bisection), ``"pgd"``, ``"ifgsm"``, ``"fgsm"``.
      config: the method's config (:class:`SearchConfig`, :class:`PGDConfig`, :class:`FGSMConfig`);
        default settings if None.
      transform: optional differentiable ``image -> image`` applied before scoring.

    Returns:
      A jitted function; ``images`` ``float32 [B, H, W, 3]`` pixels, ``targets`` ``[B]``, ``key`` one
      PRNG key (or ``[B]`` keys). ``pgd``/``fgsm`` also take ``eps=`` per-image budgets as keyword.
    """
    return jax.jit(attack_fn(score_fn, method, config, transform))
