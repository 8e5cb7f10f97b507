"""JPEG-aware attack: PGD through the differentiable JPEG, then the DCT-domain quantizer.

The third method of the results tables. The attack minimises ``L(JPEG_Q(x))`` instead of ``L(x)``
(:func:`qcamo_jax.jpeg.diff.jpeg_roundtrip`, straight-through rounding, the target encoder's DCT), so
its gradient already accounts for the re-compression; the DCT quantizer
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


def jpeg_aware_attack(
    score_fn: ScoreFn, variables: Mapping[str, Any], originals: jnp.ndarray, targets: jnp.ndarray, keys: jnp.ndarray,
    search_config=None, config: qdct.DCTConfig = qdct.DCTConfig(),
):
    """PGD + budget search on ``score o JPEG``, then :func:`~qcamo_jax.quantize.dct.quantize_dct`.

    Args:
      score_fn: ``(variables, image float [H, W, 3] pixels) -> scalar``.
      variables: model variables.
      originals: ``uint8 [B, H, W, 3]``.
      targets: ``float32 [B]``.
      keys: ``[B]`` PRNG keys (random starts, if the attack config uses them).
      search_config: :class:`qcamo_jax.attacks.config.SearchConfig` (default: the paper's settings).
      config: DCT quantizer options (quality, target encoder's DCT, max_steps, margin).

    Returns:
      ``(coefficients, decoded uint8 [B, H, W, 3], QuantizeResult, AttackResult)``.
    """
    from qcamo_jax.attacks import api

    attack = api.attack_fn(score_fn, "search", search_config, jpeg_transform(config))
    adv, attack_result = attack(variables, jnp.asarray(originals, jnp.float32), targets, keys)
    coeffs, decoded, result = qdct.quantize_dct(score_fn, variables, originals, adv, targets, config)
    return coeffs, decoded, result, attack_result
