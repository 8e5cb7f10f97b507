"""The JAX JPEG codec against libjpeg (jpeglib 6b, 9f, turbo) and Pillow, on real photos.

Agreement is reported per image and per channel (run with ``-s`` to see the table) and asserted
bit-exact where the emulation claims it.
"""

from __future__ import annotations

import functools
import io
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from photos import photo
from qcamo_jax import jpeg
from qcamo_jax.jpeg import codec, color, dct, tables

jpeglib = pytest.importorskip("jpeglib")

SIZE = (383, 517)  # odd in both directions: exercises libjpeg's edge padding (and MCU padding in 4:2:0)
NAMES = ("astronaut", "chelsea", "coffee", "rocket")
CHANNELS = ("Y", "Cb", "Cr")


@functools.lru_cache(maxsize=None)
def jit_encode(dct_method: str, subsampling: str, quality: int = 90):
    return jax.jit(functools.partial(jpeg.encode, quality=quality, dct_method=dct_method, subsampling=subsampling))


_jit_decode = jax.jit(jpeg.decode)


def libjpeg_coefficients(image, quality, dct_method, subsampling, version="6b"):
    method = {"islow": jpeglib.JDCT_ISLOW, "ifast": jpeglib.JDCT_IFAST, "float": jpeglib.JDCT_FLOAT}[dct_method]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.jpg")
        with jpeglib.version(version):
            im = jpeglib.from_spatial(np.ascontiguousarray(image))
            im.samp_factor = np.array(((1, 1),) * 3 if subsampling == "444" else ((2, 2), (1, 1), (1, 1)), np.int16)
            im.write_spatial(path, qt=quality, dct_method=method)
        return jpeg.read_jpeg_coefficients(path)


def agreement(ours, ref) -> list[float]:
    out = []
    for a, b in zip(ours.components, ref.components):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape, (a.shape, b.shape)
        out.append(float((a == b).mean()))
    return out


def report(label: str, fractions) -> None:
    print(f"{label:<48s} " + "  ".join(f"{c}={f:.6f}" for c, f in zip(CHANNELS, fractions)))


# --------------------------------------------------------------------------------------------------
# Tables


@pytest.mark.parametrize("quality", [1, 10, 25, 50, 75, 90, 95, 100])
def test_quant_tables_match_libjpeg(quality):
    x = photo("chelsea", (16, 16))
    # jpeglib calls jpeg_set_quality(q, force_baseline=FALSE): 16-bit entries below quality 25
    ref = libjpeg_coefficients(x, quality, "islow", "444")
    luma, chroma = tables.quant_tables(quality, force_baseline=False)
    np.testing.assert_array_equal(luma, ref.qt_luma)
    np.testing.assert_array_equal(chroma, ref.qt_chroma)
    # Pillow and ImageMagick force baseline tables (entries clamped to 255): our default
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format="JPEG", quality=quality, subsampling=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "p.jpg")
        open(path, "wb").write(buf.getvalue())
        ref = jpeg.read_jpeg_coefficients(path)
    luma, chroma = tables.quant_tables(quality)
    np.testing.assert_array_equal(luma, ref.qt_luma)
    np.testing.assert_array_equal(chroma, ref.qt_chroma)


def test_quant_tables_q90_background_facts():
    luma, chroma = tables.quant_tables(90)
    assert luma[0].tolist() == [3, 2, 2, 3, 5, 8, 10, 12]
    assert chroma[0, :5].tolist() == [3, 4, 5, 9, 20] and chroma[7, 7] == 20


@pytest.mark.parametrize("quality", [0, 101, -5, 90.0, 90.5, "90", True, None])
def test_quality_outside_1_100_rejected(quality):
    with pytest.raises(ValueError, match="1..100"):
        tables.quant_tables(quality)
    if quality is not None:
        with pytest.raises(ValueError, match="1..100"):
            jpeg.encode(np.zeros((8, 8, 3), np.uint8), quality)


# --------------------------------------------------------------------------------------------------
# DCT building blocks


def test_islow_matmul_form_equals_butterfly():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (512, 8, 8)).astype(np.int32)
    np.testing.assert_array_equal(dct.fdct_islow(x), dct.fdct_islow_reference(x))
    for lim in (64, 2048, 1 << 20):  # large values exercise int32 wrap-around and the range-limit table
        c = rng.integers(-lim, lim, (512, 8, 8)).astype(np.int32)
        np.testing.assert_array_equal(dct.idct_islow(c), dct.idct_islow_reference(c))


def test_fixed_point_dcts_approximate_the_orthonormal_dct():
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (256, 8, 8)).astype(np.int32)
    f = np.asarray(dct.dct(x.astype(np.float32)))
    np.testing.assert_allclose(np.asarray(dct.fdct_islow(x)) / 8.0, f, atol=0.2)
    aan = dct.aan_scale()
    # the 8-bit AAN constants and truncating multiplies cost up to ~5 units on white noise
    np.testing.assert_allclose(np.asarray(dct.fdct_ifast(x)) / aan, f, atol=6.0)
    np.testing.assert_allclose(np.asarray(dct.fdct_float(x)) / aan, f, atol=1e-3)
    np.testing.assert_allclose(np.asarray(dct.idct(dct.dct(x.astype(np.float32)))), x, atol=1e-3)


def test_colour_conversion_round_trip_is_close():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (64, 64, 3))
    back = np.asarray(color.ycc_to_rgb_int(color.rgb_to_ycc_int(rgb)))
    assert np.abs(back - rgb).max() <= 3
    np.testing.assert_allclose(np.asarray(color.ycc_to_rgb(color.rgb_to_ycc(rgb))), rgb, atol=2e-2)


# --------------------------------------------------------------------------------------------------
# Encoder emulation against libjpeg


@pytest.mark.parametrize("subsampling", ["444", "420"])
@pytest.mark.parametrize("dct_method", ["islow", "ifast", "float"])
def test_encoder_bit_exact_vs_libjpeg6b(dct_method, subsampling):
    enc = jit_encode(dct_method, subsampling)
    for name in NAMES:
        x = photo(name, SIZE)
        frac = agreement(enc(x), libjpeg_coefficients(x, 90, dct_method, subsampling))
        report(f"libjpeg 6b {dct_method} {subsampling} q90 {name} {SIZE[0]}x{SIZE[1]}", frac)
        if dct_method == "float":  # float32 op order matches; allow for a compiler's FMA contraction
            assert min(frac) >= 0.999
        else:
            assert frac == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("size", [(1, 1), (9, 23), (17, 8)])
def test_encoder_bit_exact_tiny_sizes(size):
    x = photo("astronaut", size)
    for method, sub in (("islow", "420"), ("ifast", "444")):  # padding does not depend on the DCT
        ours = jpeg.encode(x, 75, dct_method=method, subsampling=sub)
        assert agreement(ours, libjpeg_coefficients(x, 75, method, sub)) == [1.0, 1.0, 1.0], (method, sub)


@pytest.mark.parametrize("method", ["islow", "ifast", "float"])
def test_encoder_bit_exact_other_qualities(method):
    x = photo("coffee", (40, 72))
    enc = jax.jit(functools.partial(jpeg.encode, dct_method=method, subsampling="420"))  # tables traced
    for quality in (25, 50, 100):
        luma, chroma = tables.quant_tables(quality)
        ours = enc(x, qt_luma=luma, qt_chroma=chroma)
        assert agreement(ours, libjpeg_coefficients(x, quality, method, "420")) == [1.0, 1.0, 1.0], quality


@pytest.mark.parametrize("version", ["9f", "turbo210"])
def test_other_libjpeg_versions(version):
    """libjpeg-turbo equals 6b everywhere; libjpeg 7+ (9f) equals it in 4:4:4 but downsamples 4:2:0
    chroma differently (DCT-domain scaling of the subsampled components), so only luma agrees."""
    x = photo("coffee", SIZE)
    for method in ("islow", "ifast"):
        frac = agreement(jit_encode(method, "444")(x), libjpeg_coefficients(x, 90, method, "444", version))
        report(f"libjpeg {version} {method} 444 q90 coffee", frac)
        assert frac == [1.0, 1.0, 1.0]
    frac = agreement(jit_encode("islow", "420")(x), libjpeg_coefficients(x, 90, "islow", "420", version))
    report(f"libjpeg {version} islow 420 q90 coffee", frac)
    assert frac[0] == 1.0
    if version.startswith("turbo"):
        assert frac == [1.0, 1.0, 1.0]
    else:
        assert 0.95 < min(frac[1:]) < 1.0


@pytest.mark.parametrize("subsampling", ["444", "420"])
def test_encoder_vs_pillow(subsampling):
    enc = jit_encode("islow", subsampling)
    for name in NAMES:
        x = photo(name, SIZE)
        buf = io.BytesIO()
        kw = {"subsampling": 0} if subsampling == "444" else {}  # Pillow's default is 4:2:0
        Image.fromarray(x).save(buf, format="JPEG", quality=90, **kw)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "p.jpg")
            open(path, "wb").write(buf.getvalue())
            ref = jpeg.read_jpeg_coefficients(path)
        assert ref.subsampling == subsampling
        frac = agreement(enc(x), ref)
        report(f"Pillow q90 {subsampling} (islow) {name}", frac)
        assert frac == [1.0, 1.0, 1.0]


# --------------------------------------------------------------------------------------------------
# Decoder emulation against Pillow (libjpeg-turbo)


@pytest.mark.parametrize("subsampling", ["444", "420"])
def test_decoder_vs_pillow(subsampling):
    enc = jit_encode("ifast", subsampling)
    for name in NAMES:
        coeffs = enc(photo(name, SIZE))
        data = jpeg.jpeg_bytes(jax.device_get(coeffs))
        pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
        ours = np.asarray(_jit_decode(coeffs)).astype(int)
        diff = np.abs(ours - pil)
        ident = [(diff[..., c] == 0).mean() for c in range(3)]
        print(f"decode vs Pillow {subsampling} {name}: identical R={ident[0]:.6f} G={ident[1]:.6f} B={ident[2]:.6f}"
              f" max|diff|={diff.max()}")
        assert diff.max() == 0


def test_decode_float_close_to_exact_decode():
    for sub in ("444", "420"):
        coeffs = jit_encode("islow", sub)(photo("chelsea", SIZE))
        exact = np.asarray(_jit_decode(coeffs)).astype(np.float32)
        decode_float = jax.jit(functools.partial(jpeg.decode_float, height=SIZE[0], width=SIZE[1], subsampling=sub,
                                                 clip=True))
        smooth = np.asarray(decode_float(jpeg.dequantize(coeffs)))
        d = np.abs(smooth - exact)
        print(f"decode_float vs decode {sub}: max {d.max():.3f} mean {d.mean():.3f}")
        assert d.max() < (2.5 if sub == "444" else 3.5) and d.mean() < 0.6


def test_decode_range_limit_wraps_like_libjpeg():
    # libjpeg masks the IDCT output with 1023 before its clamp table: 600 -> 0 (not 255).
    blocks = np.asarray(dct.idct_islow(np.array([[[[8 * 600] + [0] * 7] + [[0] * 8] * 7]])))
    assert blocks.max() == 0  # 600 + 128 wraps into the "negative" half of the table
    np.testing.assert_array_equal(dct.idct_range_limit(jnp.array([-129, -128, 0, 127, 128, 383, 384, 639, 640, 1023])),
                                  [0, 0, 128, 255, 255, 255, 255, 0, 0, 127])


# --------------------------------------------------------------------------------------------------
# The contract used by the DCT-domain quantizer


@pytest.mark.parametrize("dct_method", ["islow", "ifast", "float"])
def test_forward_dct_rounds_to_the_stored_coefficients(dct_method):
    for sub in ("444", "420"):
        x = photo("rocket", (61, 77))
        fwd = jpeg.forward_dct(x, 90, dct_method=dct_method, subsampling=sub)
        stored = jpeg.encode(x, 90, dct_method=dct_method, subsampling=sub)
        for z, r, s, c in zip(jpeg.quantize(fwd, dct_method), fwd.ratio, fwd.step, fwd.coef):
            assert r.shape == c.shape and s.shape == (8, 8) and r.dtype == jnp.float32
        for a, b in zip(jpeg.quantize(fwd, dct_method), stored.components):
            np.testing.assert_array_equal(a, b)
        if dct_method != "float":  # plain rounding of ratio = the encoder's integers
            for r, b in zip(fwd.ratio, stored.components):
                np.testing.assert_array_equal(codec.round_half_away(r), b)
        smooth = jpeg.forward_dct_float(x.astype(np.float32), subsampling=sub)
        for c, s in zip(fwd.coef, smooth):  # the encoder's unquantized coefficients, in DCT units
            tol = 6.0 if dct_method == "ifast" else 2.5  # libjpeg's integer colour conversion and DCT rounding
            np.testing.assert_allclose(np.asarray(c), np.asarray(s), atol=tol)
    luma = tables.quant_tables(90)[0]
    fwd = jpeg.forward_dct(photo("rocket", (16, 16)), 90, dct_method=dct_method)
    if dct_method == "ifast":
        np.testing.assert_allclose(np.asarray(fwd.step[0]), luma, rtol=0.2)
        assert not np.array_equal(np.asarray(fwd.step[0]), luma)
    else:
        np.testing.assert_array_equal(np.asarray(fwd.step[0]), luma)


def test_encode_with_explicit_tables_and_vmap_jit():
    xs = np.stack([photo(n, (40, 56)) for n in NAMES])
    luma, chroma = tables.quant_tables(80)
    batched = jax.jit(jax.vmap(functools.partial(jpeg.encode, qt_luma=luma, qt_chroma=chroma, subsampling="420")))(xs)
    assert batched.y.shape == (4, 5, 7, 8, 8) and batched.cb.shape == (4, 3, 4, 8, 8)
    encode_one = jax.jit(functools.partial(jpeg.encode, quality=80, subsampling="420"))
    for i, x in enumerate(xs):
        one = encode_one(x)
        for a, b in zip(batched.components, one.components):
            np.testing.assert_array_equal(a[i], b)
    decoded = jax.jit(jax.vmap(jpeg.decode))(batched)
    assert decoded.shape == (4, 40, 56, 3) and decoded.dtype == jnp.uint8
    np.testing.assert_array_equal(decoded[1], _jit_decode(encode_one(xs[1])))


# --------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((8, 8), np.uint8), r"uint8 \[H, W, 3\].*shape \(8, 8\)"),
        (np.zeros((2, 8, 8, 3), np.uint8), r"uint8 \[H, W, 3\].*vmap"),
        (np.zeros((8, 8, 4), np.uint8), r"uint8 \[H, W, 3\].*3 channels"),
        (np.zeros((8, 8, 1), np.uint8), r"uint8 \[H, W, 3\].*3 channels"),
        (np.zeros((0, 8, 3), np.uint8), r"H, W >= 1"),
        (np.zeros((8, 8, 3), np.float32), r"uint8 \[H, W, 3\].*float32"),
        (np.full((8, 8, 3), 300, np.int16), r"uint8 \[H, W, 3\].*0..255"),
        (np.full((8, 8, 3), -1, np.int32), r"0..255"),
        ([[1, 2, 3]], r"uint8 \[H, W, 3\]"),
    ],
)
def test_bad_input_raises_value_error_naming_the_shape(bad, match):
    with pytest.raises(ValueError, match=match):
        jpeg.encode(bad, 90)
    with pytest.raises(ValueError, match=match):
        jpeg.forward_dct(bad, 90)


def test_bad_options_rejected():
    x = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="dct_method"):
        jpeg.encode(x, 90, dct_method="fast")
    with pytest.raises(ValueError, match="subsampling"):
        jpeg.encode(x, 90, subsampling="422")
    with pytest.raises(ValueError, match=r"int32 \[8, 8\]"):
        jpeg.encode(x, qt_luma=np.ones((8, 7)), qt_chroma=np.ones((8, 8)))
    with pytest.raises(ValueError, match="either quality"):
        jpeg.encode(x, 90, qt_luma=np.ones((8, 8)), qt_chroma=np.ones((8, 8)))


def test_one_trace_per_shape():
    import chex

    @jax.jit
    @chex.assert_max_traces(n=1)
    def encode_decode(x):
        return jpeg.decode(jpeg.encode(x, 90, dct_method="ifast", subsampling="420"))

    for name in NAMES:
        assert encode_decode(photo(name, (24, 40))).shape == (24, 40, 3)
