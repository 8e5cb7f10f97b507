"""Quantizers: from a float adversarial image to a file (8-bit PNG or JPEG) that stays adversarial.

* :mod:`qcamo_jax.quantize.spatial` - per-pixel floor/ceil (Bonnet, Furon, Bas, IH&MMSec 2020).
* :mod:`qcamo_jax.quantize.dct` - integer JPEG coefficients (Bonnet, Furon, Bas, MediaEval 2020).
"""

from qcamo_jax.quantize.spatial import QuantizeResult, SpatialConfig, quantize_spatial

__all__ = ["QuantizeResult", "SpatialConfig", "quantize_spatial"]
