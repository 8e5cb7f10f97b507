"""Quality models: KonCept512 (two variants), its tiny test variant, and the embedded default model.

Every model is a Flax module whose ``__call__(pixels, train=False)`` takes ``float32 [B, H, W, 3]``
**pixels in [0, 255]** and returns ``float32 [B]`` MOS-like scores (higher = better quality). The
module normalises its input itself, so attacks work in pixel units. See :mod:`qcamo_jax.models.hub`.
"""

from qcamo_jax.models.hub import QualityModel, load_model

__all__ = ["QualityModel", "load_model"]
