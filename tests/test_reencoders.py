"""Re-encoder sets: spec parsing, profiles, collapse of identical emulations, and each member's exact
emulation against the real library (Pillow, jpeglib, ImageMagick's convert) on PNG and JPEG inputs."""

import io
import shutil

import jax
import jpeglib
import numpy as np
import pytest
from PIL import Image

import photos
from qcamo_jax.jpeg import codec, encoders
from qcamo_jax.jpeg.io import read_jpeg_coefficients
from qcamo_jax.jpeg.reencoders import PROFILES, Emulation, Reencoder, ReencoderSet, SpecError, reencoder, roundtrips

HAS_IM = encoders.imagemagick_convert() is not None


def test_parse_spec_with_ranges_and_steps():
    s = ReencoderSet.parse("imagemagick:90,pillow-420:85-88,libjpegturbo210-islow-420:75-95/10,pillow-444:80-90/4")
    assert "imagemagick:90" in s.names
    assert [m.quality for m in s if m.encoder == "pillow-420"] == [85, 86, 87, 88]
    assert [m.quality for m in s if m.encoder.startswith("libjpegturbo")] == [75, 85, 95]
    assert [m.quality for m in s if m.encoder == "pillow-444"] == [80, 84, 88, 90]  # upper end kept
    assert ReencoderSet.parse(s.spec) == s
    assert hash(ReencoderSet.parse("common")) == hash(PROFILES["common"])
    assert ReencoderSet.parse("imagemagick,pillow-420:90") == ReencoderSet.parse("pillow-420:90,imagemagick:90")


@pytest.mark.parametrize("spec, words", [
    ("", "empty"),
    ("pillow-999:90", "unknown re-encoder 'pillow-999'"),
    ("pillow-420", "neither a profile"),
    ("pillow-420:0", "1 <= A <= B <= 100"),
    ("pillow-420:95-85", "1 <= A <= B <= 100"),
    ("pillow-420:9x", "must be Q, A-B or A-B/STEP"),
    ("imagemagick:90,,pillow-444:90", "empty item"),
    ("mozjpeg-420:90", "cannot be emulated exactly"),
])
def test_bad_specs_raise_one_line(spec, words):
    with pytest.raises(SpecError) as e:
        ReencoderSet.parse(spec)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_profiles_and_collapse():
    common = PROFILES["common"]
    for name in ("imagemagick:90", "pillow-420:90", "pillow-444:90", *(f"libjpegturbo210-islow-420:{q}" for q in range(75, 96, 5))):
        assert name in common.names
    assert PROFILES["imagemagick"].names == ("imagemagick:90",)
    emus = common.emulations("444")
    # pillow-420:90 and libjpeg-turbo islow 4:2:0 q90 are the same round trip: 8 members, 7 round trips.
    assert len(common) == 8 and len(emus) == 7
    cols = common.columns("444")
    assert cols["pillow-420:90"] == cols["libjpegturbo210-islow-420:90"]
    assert emus[cols["imagemagick:90"]] == Emulation(90, "ifast", "444")
    # ImageMagick keeps a JPEG input's sampling; a PNG input gets 4:4:4 at Q >= 90, 4:2:0 below.
    im = reencoder("imagemagick", 85)
    assert im.emulation("420").subsampling == "420" and im.emulation("444").subsampling == "444"
    assert im.emulation("png") == Emulation(85, "ifast", "420")
    assert reencoder("imagemagick", 95).emulation("png") == Emulation(95, "islow", "444")
    assert isinstance(hash(Reencoder("pillow-444", 90, "islow", "444")), int)


def _write_input(tmp_path, kind, image):
    """A file of kind ``png`` or a JPEG with sampling ``kind``; returns (path, pixels a decoder sees)."""
    if kind == "png":
        path = tmp_path / "in.png"
        Image.fromarray(image).save(path)
        return path, image
    path = tmp_path / f"in_{kind}.jpg"
    with jpeglib.version("6b"):  # a file of our kind: written by libjpeg, IJG tables at q95
        im = jpeglib.from_spatial(np.ascontiguousarray(image))
        im.samp_factor = np.array(((1, 1),) * 3 if kind == "444" else ((2, 2), (1, 1), (1, 1)), dtype=np.int16)
        im.write_spatial(str(path), qt=95)
    coeffs = read_jpeg_coefficients(path)
    decoded = np.asarray(codec.decode(coeffs))
    np.testing.assert_array_equal(decoded, np.asarray(Image.open(path).convert("RGB")))
    return path, decoded


SET = ReencoderSet.parse("common,imagemagick:75,imagemagick:95,pillow-444:75,libjpeg6b-ifast-444:90,"
                         "libjpeg6b-float-420:85")


@pytest.mark.parametrize("kind", ["png", "444", "420"])
def test_every_member_matches_the_real_library(tmp_path, kind):
    """Each member's emulation (JAX decode -> encode -> decode) is bit-exact to the real re-encoder."""
    image = photos.photo("chelsea", (64, 96))
    path, pixels = _write_input(tmp_path, kind, image)
    emus = SET.emulations(kind)
    emulated = np.asarray(jax.jit(roundtrips, static_argnums=1)(pixels, emus))
    cols = SET.columns(kind)
    for m in SET:
        if m.encoder == "imagemagick" and not HAS_IM:
            continue
        real = encoders.encode_file(m.encoder, path, m.quality).pixels
        np.testing.assert_array_equal(emulated[cols[m.name]], real, err_msg=f"{m.name} on a {kind} input")


@pytest.mark.skipif(not HAS_IM, reason="ImageMagick not installed")
def test_imagemagick_on_jpeg_input_keeps_sampling_and_uses_explicit_quality(tmp_path):
    """What ``convert ours.jpg -quality Q out.jpg`` writes: Q's IJG tables, the input's sampling."""
    import subprocess

    from qcamo_jax.jpeg.tables import quant_tables

    image = photos.photo("coffee", (64, 96))
    for kind, q in (("444", 75), ("420", 95), ("444", 90)):
        path, _ = _write_input(tmp_path, kind, image)
        out = tmp_path / "out.jpg"
        subprocess.run([shutil.which("convert"), str(path), "-quality", str(q), str(out)], check=True)
        c = read_jpeg_coefficients(out)
        assert c.subsampling == kind
        np.testing.assert_array_equal(c.qt_luma, quant_tables(q)[0])


def test_mozjpeg_is_an_evaluation_encoder_without_exact_emulation():
    image = photos.photo("coffee", (64, 96))
    enc = encoders.ENCODERS["mozjpeg-420"](image, 90)
    assert enc.coefficients is not None
    # Its tables are not the IJG ones and its coefficients are not any IJG encoder's rounding.
    from qcamo_jax.jpeg.tables import quant_tables

    assert not np.array_equal(enc.coefficients.qt_luma, quant_tables(90)[0])
    ours = codec.encode(image, qt_luma=enc.coefficients.qt_luma, qt_chroma=enc.coefficients.qt_chroma,
                        subsampling="420")
    assert np.mean(np.asarray(ours.y) != enc.coefficients.y) > 0.005
    Image.open(io.BytesIO(enc.data)).verify()
