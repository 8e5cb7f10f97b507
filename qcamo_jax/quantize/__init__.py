"""Quantizers: from a float adversarial image to a file (8-bit PNG or JPEG) that stays adversarial.

* :mod:`qcamo_jax.quantize.spatial` - per-pixel floor/ceil (Bonnet, Furon, Bas, IH&MMSec 2020).
* :mod:`qcamo_jax.quantize.dct` - integer JPEG coefficients (Bonnet, Furon, Bas, MediaEval 2020).
* :mod:`qcamo_jax.quantize.jpeg_aware` - PGD through the differentiable JPEG, then the DCT quantizer.

Both quantizers are pure, batched (``vmap``) and un-jitted; jit them at the call site (one program per
shape). They return the output and a :class:`QuantizeResult` (true score of the output, success,
lambda, how many entries moved, L2 in pixel units, model evaluations).
"""

from qcamo_jax.quantize.dct import DCTConfig, quantize_dct, write_jpeg
from qcamo_jax.quantize.jpeg_aware import jpeg_aware_attack
from qcamo_jax.quantize.spatial import QuantizeResult, SpatialConfig, quantize_spatial

__all__ = ["DCTConfig", "QuantizeResult", "SpatialConfig", "jpeg_aware_attack", "quantize_dct", "quantize_spatial", "write_jpeg"]
