"""Differentiable JPEG round trip whose forward value is the exact libjpeg emulation.

``jpeg_roundtrip(x)`` returns, bit for bit, what saving ``x`` as 8-bit pixels, encoding it with libjpeg
(:func:`qcamo_jax.jpeg.codec.encode`) and decoding it (:func:`qcamo_jax.jpeg.codec.decode`) gives. Its
gradient is that of a smooth surrogate of the same pipeline: float colour conversion, box
downsampling, orthonormal DCT, a rounding surrogate at the quantizer, float decode with libjpeg's
clamping. Each integer-rounding stage of the exact codec other than the quantizer (colour tables,
fixed-point DCT, IDCT, upsampling) is treated as the identity in the backward pass.

Rounding surrogates for the quantizer (``rounding=``):

* ``"ste"``: straight-through, ``d round(r) / dr = 1`` (the gradient of JPEG without quantization).
* ``"cubic"``: ``round(r) + (r - round(r))**3`` (Shin & Song 2017, "JPEG-resistant adversarial
  images"; discussed by Reich et al., WACV 2024), so ``d/dr = 3 (r - round(r))**2``, evaluated at the
  encoder's exact unquantized ratio ``r``: about 0.25 on average, 0 for coefficients that sit on an
  integer and 0.75 at a rounding tie.

The 8-bit rounding of the input pixels is always straight-through (a cubic surrogate there would give
zero gradient at integer pixel values, i.e. at every clean image).

Data contract: ``image`` float ``[H, W, 3]`` in pixel units 0-255, one image (``vmap`` for batches);
returns float32 ``[H, W, 3]`` pixels with integer values 0..255.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qcamo_jax.jpeg import codec

ROUNDINGS = ("ste", "cubic")

sg = jax.lax.stop_gradient


def round_pixels(image):
    """Float pixels -> the 8-bit values a PNG would hold (round half to even, clamp), straight-through."""
    x = jnp.asarray(image, jnp.float32)
    exact = jnp.clip(jnp.round(x), 0.0, 255.0)
    return x + sg(exact - x)


def quantize_surrogate(ratio_smooth, ratio_exact, z_exact, rounding: str = "ste"):
    """Quantized coefficients with the exact value ``z_exact`` and a surrogate gradient.

    Args:
      ratio_smooth: float ``[...]`` coefficient / step from the smooth pipeline (carries the gradient).
      ratio_exact: float ``[...]`` the encoder's exact ratio (:class:`~qcamo_jax.jpeg.codec.ForwardDCT`).
      z_exact: int ``[...]`` the stored integers.
      rounding: ``"ste"`` or ``"cubic"`` (module docstring).

    Returns:
      float32 ``[...]`` equal to ``z_exact`` in value.
    """
    z = sg(jnp.asarray(z_exact, jnp.float32))
    if rounding == "ste":
        return ratio_smooth + sg(z - ratio_smooth)
    if rounding == "cubic":
        frac = (ratio_smooth - sg(ratio_smooth)) + sg(ratio_exact - z)
        cubic = frac**3
        return z + cubic - sg(cubic)
    raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")


def jpeg_roundtrip(image, quality: int, *, dct_method: str = "islow", subsampling: str = "444",
                   rounding: str = "ste"):
    """Differentiable JPEG compression and decompression, exact in value.

    Args:
      image: float ``[H, W, 3]`` pixels in 0..255 (values are rounded to 8 bits first, as when saved).
      quality: IJG quality 1..100 (static under jit).
      dct_method: the encoder's DCT, ``"islow"``, ``"ifast"`` or ``"float"`` (static).
      subsampling: ``"444"`` or ``"420"`` (static).
      rounding: quantizer surrogate for the gradient, ``"ste"`` or ``"cubic"`` (static).

    Returns:
      float32 ``[H, W, 3]``: the decoded pixels (integers 0..255 in value), differentiable in ``image``.

    Examples:
      >>> f = jax.jit(functools.partial(jpeg_roundtrip, quality=90, dct_method="ifast"))
      >>> g = jax.grad(lambda x: score(f(x)))(x)
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    codec.check_options(dct_method, subsampling)
    image = codec.check_image(image, integer=False)
    h, w, _ = image.shape
    x = round_pixels(image)
    pixels8 = sg(x).astype(jnp.uint8)

    fwd = codec.forward_dct(pixels8, quality, dct_method=dct_method, subsampling=subsampling)
    z = codec.quantize(fwd, dct_method)
    smooth = codec.forward_dct_float(x, subsampling=subsampling)
    luma, chroma = (jnp.asarray(t) for t in _tables(quality))
    qts = (luma, chroma, chroma)
    z_s = [quantize_surrogate(c / s, r, zk, rounding) for c, s, r, zk in zip(smooth, fwd.step, fwd.ratio, z)]

    decoded = codec.decode_float([zk * q for zk, q in zip(z_s, qts)], height=h, width=w,
                                 subsampling=subsampling, clip=True)
    coeffs = codec.JpegCoefficients(*z, qt_luma=luma, qt_chroma=chroma, height=h, width=w, subsampling=subsampling)
    exact = codec.decode(coeffs).astype(jnp.float32)
    return decoded + sg(exact - decoded)


def _tables(quality):
    from qcamo_jax.jpeg.tables import quant_tables

    return quant_tables(quality)
