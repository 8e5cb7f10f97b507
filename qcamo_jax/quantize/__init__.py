"""Quantizers: from a float adversarial image to a file (8-bit PNG or JPEG) that stays adversarial.

* :mod:`qcamo_jax.quantize.spatial` - per-pixel floor/ceil (Bonnet, Furon, Bas, IH&MMSec 2020).
* :mod:`qcamo_jax.quantize.dct` - integer JPEG coefficients (Bonnet, Furon, Bas, MediaEval 2020).
* :mod:`qcamo_jax.quantize.jpeg_aware` - PGD through the differentiable JPEG, then the DCT quantizer.

Both quantizers are pure, batched (``vmap``) and un-jitted; jit them at the call site (one program per
shape). They decide success on the worst score over the file as saved and every round trip of a
re-encoder set (:class:`~qcamo_jax.jpeg.reencoders.ReencoderSet`, option ``survive``), try the zero-change
output first (:mod:`qcamo_jax.quantize.search`) and accept only outputs within ``max_l2`` /
``min_psnr``. They return the output and a :class:`QuantizeResult` (worst-case score, per-round-trip
scores, success, ``already_below_target``, ``within_limit``, lambda, entries moved, L2 in pixel units,
model evaluations).
"""

from qcamo_jax.jpeg.reencoders import PROFILES, Reencoder, ReencoderSet
from qcamo_jax.quantize.dct import DCTConfig, quantize_dct, write_jpeg
from qcamo_jax.quantize.jpeg_aware import attack_score_fn, jpeg_aware_attack
from qcamo_jax.quantize.spatial import QuantizeResult, SpatialConfig, quantize_spatial
from qcamo_jax.quantize.survival import l2_limit, survival_score_fn

__all__ = ["DCTConfig", "PROFILES", "QuantizeResult", "Reencoder", "ReencoderSet", "SpatialConfig", "attack_score_fn",
           "jpeg_aware_attack", "l2_limit", "quantize_dct", "quantize_spatial", "survival_score_fn", "write_jpeg"]
