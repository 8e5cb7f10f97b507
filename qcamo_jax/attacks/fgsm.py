"""FGSM (one step) and I-FGSM / BIM (iterated, Linf, no random start): the paper's first proof of concept.

Data contract as in :mod:`qcamo_jax.attacks.pgd`: ``images`` ``float32 [B, H, W, 3]`` pixels (0-255),
``targets`` ``[B]``, budgets in pixel units. Both attacks leave visible artefacts at the budgets needed
on KonCept512 (Bonnet et al., MediaEval 2020); they are here as baselines.

References:
  Goodfellow, Shlens, Szegedy, "Explaining and harnessing adversarial examples", ICLR 2015.
  Kurakin, Goodfellow, Bengio, "Adversarial examples in the physical world", ICLR-W 2017 (I-FGSM/BIM).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from qcamo_jax.attacks import projections, steps
from qcamo_jax.attacks.config import AttackResult, FGSMConfig, PGDConfig
from qcamo_jax.attacks.losses import ScoreFn, make_loss, with_transform
from qcamo_jax.attacks.pgd import broadcast_batch, check_images, pgd


def fgsm_single(loss_fn, variables: Any, x0: jax.Array, target: jax.Array, eps: jax.Array, config: FGSMConfig):
    """One step ``x = clip(x0 - eps * direction(dL/dx0))`` on one image ``float32 [H, W, 3]``.

    Returns:
      ``(x_adv, loss, score)`` at the stepped image.
    """
    grad = jax.grad(lambda x: loss_fn(variables, x, target)[0])(x0)
    direction = steps.direction_transform(config.norm, config.gradient, True)
    update, _ = direction.update(grad, direction.init(x0), x0)
    lo, hi = config.pixel_range
    x = jnp.clip(x0 - eps * update, lo, hi)
    loss, score = loss_fn(variables, x, target)
    return x, loss, score


def fgsm(
    score_fn: ScoreFn,
    variables: Any,
    images: jax.Array,
    targets: jax.Array,
    key: jax.Array | None = None,
    config: FGSMConfig = FGSMConfig(),
    *,
    eps: jax.Array | float | None = None,
    transform=None,
) -> tuple[jax.Array, AttackResult]:
    """Batched FGSM (Linf: ``eps * sign(g)``; L2: ``eps * g / ||g||``) towards a lower score.

    Args:
      score_fn, variables, images, targets, transform: as in :func:`qcamo_jax.attacks.pgd.pgd`.
      key: unused (kept for a uniform attack signature).
      config: :class:`FGSMConfig`.
      eps: per-image step sizes ``[B]`` or scalar (pixel units); default ``config.eps``.

    Returns:
      ``(adversarial float32 [B, H, W, 3], AttackResult)`` with ``iterations == 1``.
    """
    del key
    images = check_images(images)
    batch = images.shape[0]
    loss_fn = make_loss(with_transform(score_fn, transform), config.margin)
    targets = broadcast_batch(targets, batch)
    budgets = broadcast_batch(config.eps if eps is None else eps, batch)

    def one(x0, target, e):
        x, loss, score = fgsm_single(loss_fn, variables, x0, target, e, config)
        delta = x - x0
        return x, AttackResult(score, projections.l2_norm(delta), projections.linf_norm(delta), e, loss < 0,
                               jnp.int32(1))

    return jax.vmap(one)(images, targets, budgets)


def ifgsm_config(eps: float, steps: int | None = None, norm: str = "linf", **kwargs) -> PGDConfig:
    """I-FGSM / BIM settings as a :class:`PGDConfig`: no random start, constant step ``eps / steps``.

    Kurakin et al. use a step of 1 pixel level and ``min(eps + 4, 1.25 * eps)`` steps; that is the
    default here when ``steps`` is None.
    """
    if steps is None:
        steps = max(1, int(round(min(eps + 4, 1.25 * eps))))
    kwargs.setdefault("schedule", "constant")
    return PGDConfig(norm=norm, eps=eps, steps=steps, step_scale=1.0, random_start=False, **kwargs)


def ifgsm(
    score_fn: ScoreFn,
    variables: Any,
    images: jax.Array,
    targets: jax.Array,
    key: jax.Array | None = None,
    config: PGDConfig | None = None,
    *,
    eps: jax.Array | float | None = None,
    transform=None,
) -> tuple[jax.Array, AttackResult]:
    """Batched I-FGSM / BIM: PGD with :func:`ifgsm_config` settings (default ``eps`` = 4 pixel levels).

    ``config`` may be any :class:`PGDConfig`; its random start is forced off (that is what separates
    BIM from PGD).
    """
    config = ifgsm_config(4.0) if config is None else dataclasses.replace(config, random_start=False)
    return pgd(score_fn, variables, images, targets, key, config, eps=eps, transform=transform)
