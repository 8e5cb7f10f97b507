"""JPEG in JAX: a bit-faithful blockwise codec (libjpeg 6b), exact-coefficient files, differentiable JPEG.

Data contract: images are one ``[H, W, 3]`` RGB array in pixel units (uint8 for the exact codec, float32
0-255 for the differentiable parts); batch with ``jax.vmap``. DCT coefficients are per component
``[hb, wb, 8, 8]`` blocks in natural order ``[v, u]``, in the units of the JPEG standard (orthonormal)
DCT; quantized coefficients are int32 (see :mod:`qcamo_jax.jpeg.codec`).

Modules:
  tables    IJG quantization tables for quality 1..100; libjpeg's AAN scale tables.
  color     JFIF colour conversion (libjpeg fixed point and float), 4:2:0 down/upsampling.
  dct       orthonormal DCT/IDCT; bit-exact libjpeg islow/ifast/float FDCT and islow IDCT.
  coefficients  JpegCoefficients (quantized, per component) and ForwardDCT (unquantized) containers.
  codec     encode / decode emulation, forward_dct (unquantized coefficients + steps), decode_float.
  diff      differentiable JPEG round trip (straight-through / cubic rounding surrogates).
  io        write a .jpg holding exactly given coefficients; read coefficients back (jpeglib).
  encoders  registry of real encoders (ImageMagick, Pillow, libjpeg versions and mozjpeg via jpeglib).
  reencoders  the re-encoder set (threat model): Reencoder / ReencoderSet specs, exact and
            differentiable round trips of its members.
"""

from qcamo_jax.jpeg.codec import (
    DCT_METHODS,
    SUBSAMPLINGS,
    ForwardDCT,
    JpegCoefficients,
    block_grid,
    decode,
    decode_float,
    dequantize,
    encode,
    forward_dct,
    forward_dct_float,
    quantize,
    roundtrip,
)
from qcamo_jax.jpeg.io import jpeg_bytes, read_jpeg_coefficients, write_jpeg
from qcamo_jax.jpeg.tables import quant_tables

__all__ = [
    "DCT_METHODS",
    "SUBSAMPLINGS",
    "ForwardDCT",
    "JpegCoefficients",
    "block_grid",
    "decode",
    "decode_float",
    "dequantize",
    "encode",
    "forward_dct",
    "forward_dct_float",
    "jpeg_bytes",
    "quant_tables",
    "quantize",
    "read_jpeg_coefficients",
    "roundtrip",
    "write_jpeg",
]
