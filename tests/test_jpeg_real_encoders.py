"""`qcamo jpeg` against ImageMagick, and the registry of real encoders in qcamo_jax.jpeg.encoders."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from photos import photo
from qcamo_jax import cli, jpeg
from qcamo_jax.jpeg import encoders

pytest.importorskip("jpeglib")

SIZE = (383, 517)
NAMES = ("astronaut", "chelsea", "coffee", "rocket")
needs_imagemagick = pytest.mark.skipif(encoders.imagemagick_convert() is None, reason="ImageMagick not installed")


def fractions(a, b) -> list[float]:
    return [float((np.asarray(x) == np.asarray(y)).mean()) for x, y in zip(a.components, b.components)]


@needs_imagemagick
def test_cli_ifast_444_matches_imagemagick_quality_90(tmp_path):
    """The issue's acceptance check: `qcamo jpeg x.png y.jpg --quality 90 --dct ifast --subsampling 444`
    stores the coefficients of `convert x.png -quality 90 z.jpg`."""
    for name in NAMES:
        png, ours_path = tmp_path / f"{name}.png", tmp_path / f"{name}.jpg"
        Image.fromarray(photo(name, SIZE)).save(png)
        rc = cli.main(["jpeg", str(png), str(ours_path), "--quality", "90", "--dct", "ifast", "--subsampling", "444"])
        assert rc == 0
        ours = jpeg.read_jpeg_coefficients(ours_path)
        im = encoders.encode_file("imagemagick", png, 90).coefficients
        assert im.subsampling == "444"
        frac = fractions(ours, im)
        print(f"qcamo jpeg --dct ifast 444 vs ImageMagick q90 {name} {SIZE[0]}x{SIZE[1]}: "
              + "  ".join(f"{c}={f:.6f}" for c, f in zip(("Y", "Cb", "Cr"), frac)))
        assert min(frac) >= 0.999
        assert frac == [1.0, 1.0, 1.0]


@needs_imagemagick
def test_imagemagick_choices_of_dct_and_sampling():
    """What ImageMagick does at other qualities (documented in docs/jpeg.md): IFAST up to 90, ISLOW
    above; 4:2:0 below 90. Our encoder reproduces each choice exactly."""
    x = photo("coffee", (64, 96))
    cases = ((75, "ifast", "420"), (89, "ifast", "420"), (90, "ifast", "444"), (95, "islow", "444"))
    for quality, method, sub in cases:
        im = encoders.ENCODERS["imagemagick"](x, quality).coefficients
        assert im.subsampling == sub, quality
        assert fractions(jpeg.encode(x, quality, dct_method=method, subsampling=sub), im) == [1.0, 1.0, 1.0], quality


def test_cli_islow_matches_pillow(tmp_path):
    x = photo("chelsea", SIZE)
    png = tmp_path / "x.png"
    Image.fromarray(x).save(png)
    for sub, pillow_name in (("444", "pillow-444"), ("420", "pillow-420")):
        out = tmp_path / f"y{sub}.jpg"
        assert cli.main(["jpeg", str(png), str(out), "--quality", "90", "--dct", "islow", "--subsampling", sub]) == 0
        ref = encoders.ENCODERS[pillow_name](x, 90)
        frac = fractions(jpeg.read_jpeg_coefficients(out), ref.coefficients)
        print(f"qcamo jpeg --dct islow {sub} vs Pillow q90 chelsea: {frac}")
        assert frac == [1.0, 1.0, 1.0]
        with Image.open(out) as im:  # Pillow decodes our file to the pixels Pillow's own file gives
            np.testing.assert_array_equal(np.asarray(im.convert("RGB")), ref.pixels)


def test_cli_errors_are_one_line(tmp_path, capsys):
    png = tmp_path / "x.png"
    Image.fromarray(photo("rocket", (8, 8))).save(png)
    assert cli.main(["jpeg", str(png), str(tmp_path / "y.jpg"), "--quality", "101"]) == 2
    assert "1..100" in capsys.readouterr().err
    assert cli.main(["jpeg", str(tmp_path / "missing.png"), str(tmp_path / "y.jpg")]) == 2
    assert cli.main(["jpeg", str(png), str(tmp_path / "no" / "y.jpg")]) == 2
    assert not (tmp_path / "y.jpg").exists()


def test_cli_never_overwrites_its_input_and_warns_on_a_misleading_name(tmp_path, capsys):
    png = tmp_path / "x.png"
    Image.fromarray(photo("rocket", (8, 8))).save(png)
    before = png.read_bytes()
    (tmp_path / "link.png").symlink_to(png)
    for same in (png, tmp_path / "." / "x.png", tmp_path / "link.png"):
        capsys.readouterr()
        assert cli.main(["jpeg", str(png), str(same)]) == 2
        assert capsys.readouterr().err.strip() == f"qcamo: error: {same}: is the input: an input is never overwritten; choose another output path"
    assert png.read_bytes() == before
    assert cli.main(["jpeg", str(png), str(tmp_path / "y.png")]) == 0
    assert "does not say JPEG" in capsys.readouterr().err
    assert Image.open(tmp_path / "y.png").format == "JPEG"


def test_registry_encoders_return_consistent_results():
    x = photo("astronaut", (40, 56))
    assert {"imagemagick", "pillow-444", "pillow-420", "libjpeg6b-ifast-444", "libjpeg9f-islow-420",
            "libjpegturbo210-float-444"} <= set(encoders.ENCODERS)
    for name in ("pillow-444", "pillow-420", "libjpeg6b-islow-444", "libjpeg6b-ifast-420", "libjpeg9f-islow-444",
                 "libjpegturbo210-ifast-444"):
        assert encoders.available(name)
        out = encoders.ENCODERS[name](x, 90)
        assert out.data[:2] == b"\xff\xd8" and out.pixels.shape == x.shape and out.pixels.dtype == np.uint8
        method = "ifast" if "ifast" in name else "islow"
        sub = "420" if name.endswith("420") else "444"
        assert out.coefficients.subsampling == sub
        assert fractions(jpeg.encode(x, 90, dct_method=method, subsampling=sub), out.coefficients) == [1.0] * 3, name
        np.testing.assert_array_equal(np.asarray(jpeg.decode(out.coefficients)), out.pixels)
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\]"):
        encoders.ENCODERS["pillow-444"](x.astype(np.float32), 90)
    with pytest.raises(ValueError, match="1..100"):
        encoders.ENCODERS["libjpeg6b-islow-444"](x, 0)
    with pytest.raises(KeyError):
        encoders.available("mozjpeg")
