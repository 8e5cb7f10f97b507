"""Reading inputs as a viewer shows them (issue 13, kinds 3-5): declared depth, colour, transparency,
damaged files. References: ImageMagick (``convert``), netpbm's libpng-based ``pngtopnm``, tifffile as
an independent TIFF writer, LittleCMS through ImageMagick."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

import photos
from bad_inputs.corpus import pgm_bytes, png_break_crc, png_bytes_16bit, png_insert_chunk, swapped_srgb_profile
from qcamo_jax import cli
from qcamo_jax.errors import ImageFileError
from qcamo_jax.imageio import ImageFileWarning, load_rgb

CASES = Path(__file__).parent / "data" / "cases"
SHAPE = (24, 32)
ICC_DIR = Path("/usr/share/color/icc/ghostscript")  # profiles shipped with Ghostscript (Debian icc-profiles-free)
needs_magick = pytest.mark.skipif(shutil.which("convert") is None, reason="ImageMagick not installed")


def _magick(path, *ops) -> np.ndarray:
    """ImageMagick's 8-bit RGB reading of a file (after ``ops``)."""
    r = subprocess.run(["convert", str(path), *ops, "-depth", "8", "ppm:-"], capture_output=True, check=True)
    return np.asarray(Image.open(io.BytesIO(r.stdout)).convert("RGB")).astype(int)


def _write(tmp_path, name, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _gray16(dark: bool) -> np.ndarray:
    g = photos.photo("coffee", SHAPE)[..., 1].astype(np.uint16)
    return g if dark else g * 257 + (np.arange(g.size).reshape(g.shape) % 200).astype(np.uint16)


# ---------------------------------------------------------------------------------------------- kind 3: depth


def test_dark16_pgm_is_dark_and_equals_its_png_sibling(tmp_path):
    with Image.open(CASES / "dark16.pgm") as im:
        raw = np.asarray(im).astype(np.uint16)  # Pillow: 0..65535 (maxval 65535)
    assert raw.max() <= 255
    ours = load_rgb(CASES / "dark16.pgm")
    assert ours.max() <= 1  # near-black: values 0..255 of 65535
    png = _write(tmp_path, "dark16.png", png_bytes_16bit(raw))
    np.testing.assert_array_equal(load_rgb(png), ours)
    if shutil.which("convert"):
        assert np.abs(_magick(CASES / "dark16.pgm") - ours).max() <= 1


@pytest.mark.parametrize("dark", [False, True])
def test_same_16bit_data_same_picture_in_every_format(tmp_path, dark):
    """One 16-bit grey image written as PNG (by hand and by Pillow), PGM, TIFF (Pillow and tifffile),
    32-bit unsigned TIFF (scaled by 65537) and float TIFF (v / 65535): one picture."""
    g = _gray16(dark)
    files = {
        "png16_hand.png": png_bytes_16bit(g),
        "pgm65535.pgm": pgm_bytes(g, 65535),
    }
    buf = io.BytesIO()
    Image.fromarray(g).save(buf, "PNG")
    files["png16_pillow.png"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(g).save(buf, "TIFF")
    files["tiff16_pillow.tif"] = buf.getvalue()
    for name, arr in (("tiff16.tif", g), ("tiff_u32.tif", g.astype(np.uint32) * 65537),
                      ("tiff_f32.tif", (g / 65535.0).astype(np.float32))):
        buf = io.BytesIO()
        tifffile.imwrite(buf, arr, photometric="minisblack")
        files[name] = buf.getvalue()
    pics = {n: load_rgb(_write(tmp_path, n, d)).astype(int) for n, d in files.items()}
    want = (g >> 8).astype(int)  # 16 -> 8 bits by the high byte, whatever the values
    for n, p in pics.items():
        assert p.shape == (*SHAPE, 3)
        tol = 1 if n in ("tiff_u32.tif", "tiff_f32.tif") else 0  # rounding of other depths
        assert np.abs(p - want[..., None]).max() <= tol, n
    if shutil.which("convert"):
        for n in ("pgm65535.pgm", "tiff16.tif", "png16_hand.png"):
            assert np.abs(_magick(tmp_path / n) - pics[n]).max() <= 1, n


@pytest.mark.parametrize("maxval", [1, 15, 255, 256, 1023, 4095, 65535])
@pytest.mark.parametrize("channels", [1, 3])
def test_pgm_ppm_maxval_scales_to_white(tmp_path, maxval, channels):
    """PGM/PPM: ``maxval`` is white, for every maxval; compared with v * 255 / maxval and ImageMagick."""
    rng = np.random.default_rng(maxval)
    v = rng.integers(0, maxval + 1, (*SHAPE, channels)).squeeze()
    v.flat[0], v.flat[1] = 0, maxval
    p = _write(tmp_path, f"x{maxval}.{'pgm' if channels == 1 else 'ppm'}", pgm_bytes(v, maxval))
    ours = load_rgb(p).astype(int)
    want = np.round(v * 255.0 / maxval).astype(int)
    want = want[..., None] if channels == 1 else want
    assert np.abs(ours - want).max() <= 1
    assert ours.reshape(-1, 3)[1].tolist() == [255] * 3 or channels == 3
    if shutil.which("convert"):
        assert np.abs(_magick(p) - ours).max() <= 1


def test_one_bit_images_are_black_and_white(tmp_path):
    bits = photos.photo("astronaut", SHAPE)[..., 0] > 128
    want = np.where(bits, 255, 0)[..., None]
    for fmt, ext in (("PNG", "png"), ("PPM", "pbm"), ("TIFF", "tif"), ("BMP", "bmp")):
        buf = io.BytesIO()
        Image.fromarray(bits).save(buf, fmt)
        ours = load_rgb(_write(tmp_path, f"b.{ext}", buf.getvalue())).astype(int)
        np.testing.assert_array_equal(ours, np.broadcast_to(want, ours.shape), err_msg=fmt)


def test_float_tiff_declared_range_and_refusals(tmp_path):
    g = _gray16(False) / 65535.0
    # SMinSampleValue / SMaxSampleValue (tags 340/341, DOUBLE) declare [0, 4]: white is 4.
    buf = io.BytesIO()
    tifffile.imwrite(buf, (g * 4).astype(np.float32), photometric="minisblack",
                     extratags=[(340, 12, 1, 0.0, True), (341, 12, 1, 4.0, True)])
    ours = load_rgb(_write(tmp_path, "f4.tif", buf.getvalue())).astype(int)
    assert np.abs(ours - np.round(g * 255)[..., None]).max() <= 1
    # PFM (Pillow writes mode F as PFM): [0, 1] float.
    buf = io.BytesIO()
    Image.fromarray(g.astype(np.float32)).save(buf, "PPM")
    assert np.abs(load_rgb(_write(tmp_path, "x.pfm", buf.getvalue())).astype(int) - np.round(g * 255)[..., None]).max() <= 1
    refused = {
        "hdr.tif": ((g * 3).astype(np.float32), r"outside their range \[0, 1\]"),
        "nan.tif": (np.where(g > 0.5, np.nan, g).astype(np.float32), "NaN"),
        "i16.tif": ((g * 30000).astype(np.int16), "signed"),
        "i32.tif": ((g * 1e6).astype(np.int32), "signed"),
        "f64.tif": (g, "TIFF"),  # Pillow cannot decode 64-bit float samples: the reason says TIFF
    }
    for name, (arr, reason) in refused.items():
        buf = io.BytesIO()
        tifffile.imwrite(buf, arr, photometric="minisblack")
        with pytest.raises(ImageFileError, match=reason) as err:
            load_rgb(_write(tmp_path, name, buf.getvalue()))
        assert name in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------- kind 4: colour, alpha


@needs_magick
def test_colour_keys_composited_over_white_like_imagemagick(tmp_path):
    base = photos.photo("chelsea", SHAPE).copy()
    base[:8, :10] = (0, 0, 0)
    base[10:14] = (12, 200, 7)
    files = {}
    buf = io.BytesIO()
    Image.fromarray(base).save(buf, "PNG", transparency=(12, 200, 7))
    files["rgb_key.png"] = buf.getvalue()
    gray = Image.fromarray(base).convert("L")
    buf = io.BytesIO()
    gray.save(buf, "PNG", transparency=0)
    files["l_key.png"] = buf.getvalue()
    pal = Image.fromarray(base).quantize(32)
    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=int(np.asarray(pal)[0, 0]))
    files["p_key.png"] = buf.getvalue()
    g16 = np.asarray(gray, np.uint16) * 257
    files["l16_key.png"] = png_insert_chunk(png_bytes_16bit(g16), b"tRNS", struct.pack(">H", int(g16[0, 0])))
    shutil.copy(CASES / "rgb_colour_key.png", tmp_path / "given.png")
    names = [*files, "given.png"]
    for n, d in files.items():
        _write(tmp_path, n, d)
    for n in names:
        ours = load_rgb(tmp_path / n).astype(int)
        ref = _magick(tmp_path / n, "-background", "white", "-flatten")
        assert np.abs(ours - ref).max() <= 1, n
        corner = (0, 0) if n != "rgb_key.png" else (11, 20)  # a keyed pixel of each file
        assert ours[corner].tolist() == [255, 255, 255] and base[corner].tolist() != [255, 255, 255], n


@needs_magick
@pytest.mark.parametrize("profile, mode", [("a98.icc", "RGB"), ("rommrgb.icc", "RGB"), ("sgray.icc", "L"),
                                           ("default_cmyk.icc", "CMYK")])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
def test_icc_profile_converted_to_srgb_like_imagemagick(tmp_path, profile, mode, fmt):
    """The same pixels tagged with another profile are converted to sRGB by LittleCMS; ImageMagick's
    ``-profile sRGB`` (LittleCMS too) is the reference; the conversion must visibly change the pixels."""
    src = ICC_DIR / profile
    if not src.exists():
        pytest.skip(f"{src} not installed")
    if fmt == "PNG" and mode == "CMYK":
        pytest.skip("PNG has no CMYK")
    im = Image.fromarray(photos.photo("coffee", SHAPE)).convert(mode)
    path = tmp_path / f"x.{fmt.lower()}"
    im.save(path, fmt, icc_profile=src.read_bytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    ours = load_rgb(path).astype(int)
    srgb = tmp_path / "srgb.icc"
    srgb.write_bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    ref = _magick(path, "-intent", "perceptual", "-profile", str(srgb))
    assert np.abs(ours - ref).max() <= 2 and np.abs(ours - ref).mean() < 1  # 16-bit vs 8-bit LittleCMS paths
    untagged = np.asarray(im.convert("RGB")).astype(int)
    if mode != "L" or profile != "sgray.icc":
        assert np.abs(ours - untagged).mean() > 1  # the profile mattered


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "WEBP"])
def test_icc_profile_with_swapped_primaries_swaps_red_and_blue(tmp_path, fmt):
    """A profile whose red primary is sRGB's blue (and vice versa): the sRGB picture has R and B
    exchanged, exactly (equal tone curves), whatever the container."""
    base = photos.photo("coffee", SHAPE)
    path = tmp_path / f"x.{fmt.lower()}"
    Image.fromarray(base).save(path, fmt, icc_profile=swapped_srgb_profile(), **({"lossless": True} if fmt == "WEBP" else {}))
    with Image.open(path) as im:
        stored = np.asarray(im.convert("RGB")).astype(int)
    ours = load_rgb(path).astype(int)
    assert np.abs(ours - stored[..., ::-1]).max() <= 1
    assert np.abs(ours - stored).mean() > 10


def test_damaged_icc_profile_is_ignored_with_a_warning(tmp_path):
    im = Image.fromarray(photos.photo("coffee", SHAPE))
    im.save(tmp_path / "x.png", icc_profile=b"not a profile" * 20)
    with pytest.warns(ImageFileWarning, match=r"x\.png: embedded ICC profile ignored"):
        ours = load_rgb(tmp_path / "x.png")
    np.testing.assert_array_equal(ours, np.asarray(im))


@pytest.mark.skipif(shutil.which("pngtopnm") is None, reason="netpbm not installed")
@pytest.mark.parametrize("gamma", [100000, 80000, 55000, 45455, 30000])
def test_png_gamma_applied_like_libpng(tmp_path, gamma):
    """gAMA: libpng's correction to a 2.2 display, as netpbm's ``pngtopnm -gamma 2.2`` (libpng) does;
    within libpng's 5 % threshold of sRGB nothing changes; an sRGB chunk makes gAMA ignored."""
    base = photos.photo("rocket", SHAPE)
    buf = io.BytesIO()
    Image.fromarray(base).save(buf, "PNG")
    p = _write(tmp_path, "g.png", png_insert_chunk(buf.getvalue(), b"gAMA", struct.pack(">I", gamma)))
    ours = load_rgb(p).astype(int)
    ref = np.asarray(Image.open(io.BytesIO(subprocess.run(["pngtopnm", "-gamma", "2.2", str(p)], capture_output=True,
                                                          check=True).stdout))).astype(int)
    if abs(1 / (2.2 * gamma / 100000) - 1) <= 0.05:
        np.testing.assert_array_equal(ours, base)
    else:
        assert np.abs(ours - ref).max() <= 1 and np.abs(ours - base).mean() > 2
    with_srgb = png_insert_chunk(p.read_bytes(), b"sRGB", b"\x00")
    np.testing.assert_array_equal(load_rgb(_write(tmp_path, "s.png", with_srgb)), base)


# ---------------------------------------------------------------------------------------------- kind 5: damage


@needs_magick
def test_bad_text_crc_decodes_like_imagemagick_with_one_warning(tmp_path):
    with pytest.warns(ImageFileWarning, match=r"bad_text_crc\.png: ignored PNG chunk\(s\) with a bad CRC: tEXt"):
        ours = load_rgb(CASES / "bad_text_crc.png").astype(int)
    np.testing.assert_array_equal(ours, _magick(CASES / "bad_text_crc.png"))


@pytest.mark.parametrize("chunk", [b"tEXt", b"zTXt", b"iTXt", b"tIME", b"pHYs", b"gAMA"])
@pytest.mark.parametrize("where", ["before", "after"])
def test_bad_ancillary_crc_anywhere_decodes(tmp_path, chunk, where):
    base = photos.photo("astronaut", SHAPE)
    buf = io.BytesIO()
    Image.fromarray(base).save(buf, "PNG")
    data = {b"tEXt": b"k\x00v", b"zTXt": b"k\x00\x00" + __import__("zlib").compress(b"v"), b"iTXt": b"k\x00\x00\x00\x00\x00v",
            b"tIME": b"\x07\xe6\x01\x02\x03\x04\x05", b"pHYs": b"\x00\x00\x0b\x13\x00\x00\x0b\x13\x01",
            b"gAMA": struct.pack(">I", 100000)}[chunk]
    png = buf.getvalue()
    if where == "before":
        png = png_insert_chunk(png, chunk, data, crc_ok=False)
    else:  # before IEND
        good = png_insert_chunk(b"\x89PNG\r\n\x1a\n" + png[8:33], chunk, data, crc_ok=False)[33:]
        png = png[:-12] + good + png[-12:]
    p = _write(tmp_path, "x.png", png)
    with pytest.warns(ImageFileWarning, match=chunk.decode()):
        np.testing.assert_array_equal(load_rgb(p), base)  # (a damaged gAMA is dropped: no correction)


@pytest.mark.parametrize("case, reason", [
    ("ihdr_crc", "bad CRC in the critical chunk IHDR"),
    ("idat_crc", r"bad CRC in the critical chunk IDAT \(the image data\)"),
    ("truncated_idat", "truncated PNG file"),
    ("truncated_jpeg", "truncated JPEG file"),
    ("heic", "HEIC"),
    ("random", "not an image"),
    ("cut_header", "PNG"),
])
def test_refusals_say_the_true_reason(tmp_path, case, reason):
    base = Image.fromarray(photos.photo("astronaut", SHAPE))
    png, jpg = io.BytesIO(), io.BytesIO()
    base.save(png, "PNG")
    base.save(jpg, "JPEG", quality=90)
    png, jpg = png.getvalue(), jpg.getvalue()
    data = {
        "ihdr_crc": png_break_crc(png, b"IHDR"),
        "idat_crc": png_break_crc(png, b"IDAT"),
        "truncated_idat": png[: len(png) * 2 // 3],
        "truncated_jpeg": jpg[: len(jpg) // 2],
        "heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(100),
        "random": np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes(),
        "cut_header": png[:20],
    }[case]
    with pytest.raises(ImageFileError, match=reason) as err:
        load_rgb(_write(tmp_path, f"{case}.img", data))
    assert f"{case}.img" in str(err.value) and "\n" not in str(err.value)


def test_cli_prints_the_warning_once_as_one_line(tmp_path, tiny_checkpoint, capsys):
    shutil.copy(CASES / "bad_text_crc.png", tmp_path / "bad_text_crc.png")
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        assert cli.main(["score", "--model", str(tiny_checkpoint), str(tmp_path)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(err) == 1 and err[0].startswith("qcamo: warning: ") and "bad_text_crc.png" in err[0], err
