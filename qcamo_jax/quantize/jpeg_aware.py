"""JPEG-aware attack: PGD through the differentiable JPEG, then the DCT-domain quantizer.

The third method of the results tables. The attack minimises the loss of the image after the
re-encoders of ``config.survive`` instead of ``L(x)``: the mean (default) or the max over ``{x} U``
the set's differentiable round trips (:func:`qcamo_jax.quantize.survival.survival_score_fn`,
:func:`qcamo_jax.jpeg.diff.jpeg_roundtrip`, straight-through rounding, each member's DCT and
sampling), so its gradient already accounts for the re-compressions; the DCT quantizer
(:func:`qcamo_jax.quantize.dct.quantize_dct`) then picks the integer coefficients written to the file,
checking the loss on the exactly decoded image.

Data contract: ``originals`` ``uint8 [B, H, W, 3]``, ``targets`` ``float32 [B]``, ``keys`` ``[B]`` PRNG
keys. Pure and un-jitted: jit at the call site (one program per shape).
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax.numpy as jnp

from qcamo_jax.quantize import dct as qdct
from qcamo_jax.quantize.spatial import ScoreFn


def jpeg_transform(config: qdct.DCTConfig):
    """Differentiable ``image float [H, W, 3] -> JPEG-decoded image`` for the encoder ``config`` targets."""
    from qcamo_jax.jpeg import diff

    return functools.partial(diff.jpeg_roundtrip, quality=config.quality, dct_method=config.dct_method,
                             subsampling=config.subsampling)


def attack_score_fn(score_fn: ScoreFn, config: qdct.DCTConfig, reduce: str = "mean") -> ScoreFn:
    """The score the attack minimises: ``reduce`` (``"mean"`` or ``"worst"``) over the written file's
    pixels and their round trips through ``config.survive`` (the file is a ``config.subsampling`` JPEG)."""
    from qcamo_jax.quantize import survival

    return survival.survival_score_fn(score_fn, config.survive, config.subsampling, reduce)


def jpeg_aware_attack(
    score_fn: ScoreFn, variables: Mapping[str, Any], originals: jnp.ndarray, targets: jnp.ndarray, keys: jnp.ndarray,
    search_config=None, config: qdct.DCTConfig = qdct.DCTConfig(), reduce: str = "mean",
):
    """PGD + budget search on ``score o JPEG``, then :func:`~qcamo_jax.quantize.dct.quantize_dct`.

    Args:
      score_fn: ``(variables, image float [H, W, 3] pixels) -> scalar``.
      variables: model variables.
      originals: ``uint8 [B, H, W, 3]``.
      targets: ``float32 [B]``.
      keys: ``[B]`` PRNG keys (random starts, if the attack config uses them).
      search_config: :class:`qcamo_jax.attacks.config.SearchConfig` (default: the paper's settings).
      config: DCT quantizer options (written file, re-encoder set, max_steps, margin, limits).
      reduce: the attack's loss over the set, ``"mean"`` or ``"worst"`` (:func:`attack_score_fn`).

    Returns:
      ``(coefficients, decoded uint8 [B, H, W, 3], QuantizeResult, AttackResult)``.
    """
    from qcamo_jax.attacks import api

    attack = api.attack_fn(attack_score_fn(score_fn, config, reduce), "search", search_config)
    adv, attack_result = attack(variables, jnp.asarray(originals, jnp.float32), targets, keys)
    coeffs, decoded, result = qdct.quantize_dct(score_fn, variables, originals, adv, targets, config)
    return coeffs, decoded, result, attack_result
