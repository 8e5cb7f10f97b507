"""Scoring and measuring outputs: batched model scores and distortion of ``uint8`` images.

Data contract: :class:`Scorer` maps ``uint8 [N, H, W, 3]`` RGB pixels to ``float64 [N]`` scores on the
model's 0-100 scale, in fixed-size chunks (one compile per shape and chunk size; the last chunk is
padded by repeating its last image), each image scored alone so that its score does not depend on the
chunk. :func:`distortion` gives per image pair ``l2`` and ``linf`` in pixel units (0-255), ``psnr`` in
dB (``None`` when identical) and ``ssim``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

class Scorer:
    """Model scoring of ``uint8`` images in chunks of a fixed size per shape (one compile per shape and size).

    The images of a chunk are scored one after the other inside the compiled program, so a score is
    the same whatever the chunk size or the other images of the chunk.
    """

    def __init__(self, model, apply_fn: Callable | None = None):
        import jax
        import jax.numpy as jnp

        self.model = model
        # One image at a time inside the program (see AttackEngine): a score must not depend on the
        # chunk size, which XLA's shape-dependent convolution algorithms would otherwise make it do.
        one = lambda v, x: model.apply(v, x[None].astype(jnp.float32))[0]  # noqa: E731
        self._fn = apply_fn or jax.jit(lambda v, x: jax.lax.map(lambda xi: one(v, xi), x))

    def __call__(self, images: np.ndarray, batch: int) -> np.ndarray:
        images = np.asarray(images, np.uint8)
        n = images.shape[0]
        out = []
        for i in range(0, n, batch):
            chunk = images[i:i + batch]
            pad = batch - chunk.shape[0]
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)], 0)
            out.append(np.asarray(self._fn(self.model.variables, chunk))[: batch - pad])
        return np.concatenate(out).astype(np.float64)


def distortion(originals: np.ndarray, outputs: np.ndarray) -> list[dict[str, float | None]]:
    """L2 and Linf (pixel units, 0-255), PSNR (dB, ``None`` if identical) and SSIM per image pair.

    Args:
      originals, outputs: ``uint8 [B, H, W, 3]``.
    """
    from qcamo_jax import metrics  # the one implementation of L2/PSNR/SSIM

    l2 = np.asarray(metrics.l2(originals, outputs), np.float64)
    psnr = np.asarray(metrics.psnr(originals, outputs), np.float64)
    ssim = np.asarray(metrics.ssim(originals, outputs), np.float64)
    linf = np.abs(outputs.astype(np.int16) - originals.astype(np.int16)).reshape(len(originals), -1).max(1)
    return [{"l2": float(l2[i]), "linf": float(linf[i]), "psnr": _finite(float(psnr[i])), "ssim": float(ssim[i])}
            for i in range(len(originals))]


def _finite(x: float) -> float | None:
    return x if np.isfinite(x) else None  # identical images: PSNR = inf, which JSON cannot hold
