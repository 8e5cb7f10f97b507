"""The containers of JPEG DCT coefficients: quantized (:class:`JpegCoefficients`) and not (:class:`ForwardDCT`).

Data contract (one image; under ``vmap`` every array gains a leading batch axis): per component
(0 = Y, 1 = Cb, 2 = Cr) a block grid ``[hb, wb, 8, 8]``, each block ``[v, u]`` in natural order (row =
vertical frequency); luma has ``ceil(H/8) x ceil(W/8)`` blocks, chroma the same in 4:4:4 and
``ceil(H/16) x ceil(W/16)`` in 4:2:0. Quantization tables are ``[8, 8]`` in DCT units (the JPEG
standard's orthonormal DCT of level-shifted samples). :mod:`qcamo_jax.jpeg.codec` makes and reads them.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.struct
import jax


@flax.struct.dataclass
class JpegCoefficients:
    """The quantized content of one baseline YCbCr JPEG (a pytree; ``height``, ``width``, ``subsampling`` static).

    Attributes:
      y: int32 ``[ceil(H/8), ceil(W/8), 8, 8]`` quantized luma coefficients, natural order ``[v, u]``.
      cb: int32 ``[hc, wc, 8, 8]``; ``hc, wc`` = luma's in 4:4:4, ``ceil(H/16), ceil(W/16)`` in 4:2:0.
      cr: int32, same shape as ``cb``.
      qt_luma: int32 ``[8, 8]`` luma quantization table (natural order, DCT units).
      qt_chroma: int32 ``[8, 8]`` table shared by Cb and Cr.
      height: image height H in pixels (static).
      width: image width W in pixels (static).
      subsampling: ``"444"`` or ``"420"`` (static).

    Under ``vmap`` every array gains a leading batch axis (``y: [B, hb, wb, 8, 8]``, ``qt_*: [B, 8, 8]``).
    """

    y: jax.Array
    cb: jax.Array
    cr: jax.Array
    qt_luma: jax.Array
    qt_chroma: jax.Array
    height: int = flax.struct.field(pytree_node=False)
    width: int = flax.struct.field(pytree_node=False)
    subsampling: str = flax.struct.field(pytree_node=False, default="444")

    @property
    def components(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        return (self.y, self.cb, self.cr)

    @property
    def tables(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Quantization table of each component: ``(qt_luma, qt_chroma, qt_chroma)``."""
        return (self.qt_luma, self.qt_chroma, self.qt_chroma)


class ForwardDCT(NamedTuple):
    """Unquantized DCT coefficients of one image as an encoder computes them, before rounding.

    For each component ``k`` (0 = Y, 1 = Cb, 2 = Cr):

    * ``ratio[k]``: float32 ``[hb, wb, 8, 8]``, the coefficient divided by its quantization step, as the
      encoder computes it. The stored integer is ``round_half_away_from_zero(ratio)`` for ``islow``
      and ``ifast`` (exact: ``ratio`` is the correctly rounded quotient of the encoder's two integers,
      so ties are kept) and ``floor(float32(ratio + 16384.5)) - 16384`` for ``float``; use
      :func:`quantize`.
    * ``step[k]``: float32 ``[8, 8]``, the effective quantization step in DCT units. ``islow``,
      ``float``: the quantization table itself. ``ifast``: libjpeg divides the AAN output ``t`` by the
      integer ``D = round(q * aanscale / 2**11)``, i.e. it rounds ``F / (D / (8 s_v s_u))``; the
      effective step ``D / (8 s_v s_u)`` differs from ``q`` by up to a few percent at high frequencies.

    ``coef = ratio * step`` (property) is the unquantized coefficient in DCT units (float32); for
    ``islow`` it is exactly the encoder's fixed-point DCT / 8. Change a coefficient by ``k`` steps:
    ``z = round(ratio) + k``; decode ``z * qt`` (:func:`dequantize`), not ``z * step``.
    """

    ratio: tuple[jax.Array, jax.Array, jax.Array]
    step: tuple[jax.Array, jax.Array, jax.Array]

    @property
    def coef(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        return tuple(r * s for r, s in zip(self.ratio, self.step))
