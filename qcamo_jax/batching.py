"""How per-image functions are batched: ``vmap``, except that a batch of one runs unbatched.

Data contract: :func:`map_images` takes a function of one image's arrays (no batch axis) and arrays
with a leading batch axis ``B``; it returns the function's outputs with that axis added (a pytree of
``[B, ...]`` arrays).

Why a batch of one is special: under ``vmap`` a ``lax.cond`` whose predicate depends on the image
becomes a ``select`` that computes both branches. The CPU engine (``qcamo_jax.pipeline.engine``) runs
images one at a time (``lax.map`` of the batched function at batch size 1), so there the branches that
save work (the search's reused first gradient, the DCT quantizer's gradient fallback) only save it if
the function runs unbatched. Results are the same either way.
"""

from __future__ import annotations

from typing import Any, Callable

import jax


def map_images(fn: Callable[..., Any], *batched: Any) -> Any:
    """``jax.vmap(fn)(*batched)``, or ``fn`` on the single image of a batch of one (batch axis re-added).

    Args:
      fn: function of one image's arrays.
      *batched: pytrees of arrays with the same leading batch size ``B``.

    Returns:
      ``fn``'s outputs with a leading axis of size ``B``.
    """
    sizes = {leaf.shape[0] for leaf in jax.tree.leaves(batched)}
    if sizes == {1}:
        return jax.tree.map(lambda x: x[None], fn(*jax.tree.map(lambda x: x[0], batched)))
    return jax.vmap(fn)(*batched)


def unbatch(tree: Any, i: int) -> Any:
    """Image ``i`` of a pytree of batched arrays (leading axis ``B``), as numpy arrays.

    E.g. one image's :class:`~qcamo_jax.jpeg.codec.JpegCoefficients` out of :func:`qcamo_jax.quantize.dct.quantize_dct`'s.
    """
    import numpy as np

    return jax.tree.map(lambda a: np.asarray(a[i]), tree)
