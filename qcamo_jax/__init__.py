"""qcamo_jax: quality camouflage in JAX.

Change a photo imperceptibly so that a blind image quality model (KonCept512 or the embedded default
model) scores it below a target, in a way that survives 8-bit saving and JPEG re-compression.

Data contract used throughout the package (each module restates what it needs):
  * images are ``[H, W, 3]`` RGB, NHWC when batched, in **pixel units** (0-255), uint8 or float32;
  * model inputs in [-1, 1] are produced inside the model (``x / 127.5 - 1``), never by callers;
  * JPEG coefficients are integers per 8x8 block, see :mod:`qcamo_jax.jpeg`.
"""

from qcamo_jax import host_malloc as _host_malloc
from qcamo_jax import xla_flags as _xla_flags

# First thing, before anything imports a JAX backend: XLA reads XLA_FLAGS once, when it starts, and
# its threads pick their malloc arena at their first allocation.
_xla_flags.apply()
_host_malloc.apply()

__version__ = "0.1.0"
