"""Exact-coefficient JPEG files: what we write is what every decoder reads."""

from __future__ import annotations

import functools
import io
import os
import tempfile

import jax
import numpy as np
import pytest
from PIL import Image

from photos import photo
from qcamo_jax import jpeg
from qcamo_jax.errors import ImageFileError

pytest.importorskip("jpeglib")


@pytest.mark.parametrize("subsampling", ["444", "420"])
@pytest.mark.parametrize("size", [(37, 53), (1, 17)])
def test_write_read_round_trip_any_size(tmp_path, size, subsampling):
    x = photo("coffee", size)
    coeffs = jpeg.encode(x, 90, dct_method="ifast", subsampling=subsampling)
    path = tmp_path / "out.jpg"
    jpeg.write_jpeg(path, jax.device_get(coeffs))
    assert sorted(os.listdir(tmp_path)) == ["out.jpg"]  # atomic write left no temporary file
    back = jpeg.read_jpeg_coefficients(path)
    assert (back.height, back.width, back.subsampling) == (*size, subsampling)
    for a, b in zip(coeffs.components, back.components):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.qt_luma, coeffs.qt_luma)
    np.testing.assert_array_equal(back.qt_chroma, coeffs.qt_chroma)
    with Image.open(path) as im:  # the jpeglib size pitfall: the true size, not blocks x 8
        assert im.size == (size[1], size[0])
        pil = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(pil, np.asarray(jpeg.decode(coeffs)))


@pytest.mark.parametrize("subsampling", ["444", "420"])
@pytest.mark.parametrize("scale, qmax", [(3, 255), (60, 4)])
def test_decode_on_extreme_coefficients(subsampling, scale, qmax):
    """Adversarial coefficients can be anything in the baseline range. Far outside what images produce,
    the IDCT output leaves 0..255 by hundreds: libjpeg's C table wraps (``range_limit="wrap"``, checked
    against jpeglib's libjpeg 6b) while libjpeg-turbo's SIMD saturates (``"clamp"``, checked against
    Pillow)."""
    import jpeglib

    rng = np.random.default_rng(0)
    h, w = 45, 70
    (hb, wb), (hc, wc) = jpeg.block_grid(h, w, subsampling)
    comps = [np.clip(rng.normal(0, scale, (a, b, 8, 8)), -1023, 1023).astype(np.int32)
             for a, b in ((hb, wb), (hc, wc), (hc, wc))]
    tables = [rng.integers(1, qmax + 1, (8, 8)).astype(np.int32) for _ in range(2)]
    coeffs = jpeg.JpegCoefficients(*comps, *tables, height=h, width=w, subsampling=subsampling)
    data = jpeg.jpeg_bytes(coeffs)
    pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.jpg")
        open(path, "wb").write(data)
        with jpeglib.version("6b"):
            c_lib = jpeglib.read_spatial(path, dct_method=jpeglib.JDCT_ISLOW).spatial.astype(int)
    for mode, ref, name in (("clamp", pil, "Pillow"), ("wrap", c_lib, "libjpeg 6b")):
        ours = np.asarray(jax.jit(functools.partial(jpeg.decode, range_limit=mode))(coeffs)).astype(int)
        diff = np.abs(ours - ref)
        print(f"extreme coefficients {subsampling} N(0,{scale}) q<={qmax}: {mode} vs {name}: "
              f"identical {(diff == 0).mean():.6f}, max|diff| {diff.max()}")
        assert diff.max() == 0


def _coeffs(**changes):
    x = photo("rocket", (16, 24))
    c = jax.device_get(jpeg.encode(x, 90))
    return c.replace(**changes)


def test_write_rejects_bad_coefficients(tmp_path):
    good = _coeffs()
    with pytest.raises(ValueError, match=r"\[2, 3, 8, 8\] for a 16x24 444 image"):
        jpeg.write_jpeg(tmp_path / "a.jpg", good.replace(y=good.y[:1]))
    with pytest.raises(ValueError, match="integer"):
        jpeg.write_jpeg(tmp_path / "a.jpg", good.replace(cb=good.cb.astype(np.float32)))
    big = good.y.copy()
    big[0, 0, 3, 3] = 1024
    with pytest.raises(ValueError, match="baseline range"):
        jpeg.write_jpeg(tmp_path / "a.jpg", good.replace(y=big))
    with pytest.raises(ValueError, match="1..255"):
        jpeg.write_jpeg(tmp_path / "a.jpg", good.replace(qt_luma=np.zeros((8, 8), np.int32)))
    assert os.listdir(tmp_path) == []


def test_read_rejects_non_jpeg_and_grayscale(tmp_path):
    bad = tmp_path / "not.jpg"
    bad.write_bytes(b"hello")
    with pytest.raises(ImageFileError, match="not.jpg"):
        jpeg.read_jpeg_coefficients(bad)
    gray = tmp_path / "gray.jpg"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(gray, quality=90)
    with pytest.raises(ImageFileError, match="grayscale"):
        jpeg.read_jpeg_coefficients(gray)


def test_batched_coefficients_are_written_one_by_one(tmp_path):
    xs = np.stack([photo(n, (16, 16)) for n in ("chelsea", "coffee")])
    batched = jax.device_get(jax.vmap(functools.partial(jpeg.encode, quality=75))(xs))
    for i in range(2):
        one = jax.tree_util.tree_map(lambda a: a[i], batched)
        jpeg.write_jpeg(tmp_path / f"{i}.jpg", one)
        np.testing.assert_array_equal(jpeg.read_jpeg_coefficients(tmp_path / f"{i}.jpg").y, one.y)
