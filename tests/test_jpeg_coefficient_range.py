"""The range of a quantized coefficient (jpeg.tables.coefficient_range) against libjpeg, and the DCT
quantizer's candidates inside it at every quality and subsampling (issue 13, kind 1a)."""

import jax
import jax.numpy as jnp
import jpeglib
import numpy as np
import pytest
from PIL import Image

import photos
from qcamo_jax import jpeg
from qcamo_jax.errors import JpegCoefficientError, QcamoError
from qcamo_jax.jpeg import codec, tables
from qcamo_jax.quantize import dct as qdct

QUALITIES = range(1, 101)


def _write_dct(tmp_path, y, qt=1):
    """libjpeg 6b itself (jpeglib) writing one row of luma blocks; True if it accepts them."""
    c = np.zeros((1, y.shape[1], 8, 8), np.int16)
    with jpeglib.version("6b"):
        im = jpeglib.from_dct(y.astype(np.int16), c, c.copy(), qt=np.full((2, 8, 8), qt, np.uint16), quant_tbl_no=[0, 1, 1])
        try:
            im.write_dct(str(tmp_path / "t.jpg"))
        except Exception:  # jpeglib reports libjpeg's JERR_BAD_DCT_COEF as a generic write failure
            return False
    return True


def test_widest_range_is_libjpegs_huffman_limit(tmp_path):
    """Entry 1 gives the coder's limit: libjpeg refuses AC 1024 and DC steps of 2048, accepts the bounds."""
    lo, hi = tables.coefficient_range(np.ones((8, 8), np.int64))
    assert (lo[0, 0], hi[0, 0], lo[0, 1], hi[0, 1]) == (-1024, 1023, -1023, 1023)
    y = np.zeros((1, 2, 8, 8))
    for ac, ok in ((hi[0, 1], True), (lo[0, 1], True), (hi[0, 1] + 1, False), (lo[0, 1] - 1, False)):
        y[0, 0, 3, 5] = ac
        assert _write_dct(tmp_path, y) == ok, ac
    y[0, 0, 3, 5] = 0
    y[0, :, 0, 0] = (lo[0, 0], hi[0, 0])  # the largest DC difference the range allows: 2047, accepted
    assert _write_dct(tmp_path, y)
    y[0, :, 0, 0] = (lo[0, 0] - 1, hi[0, 0])  # one more: refused
    assert not _write_dct(tmp_path, y)


@pytest.mark.parametrize("subsampling", [0, 2])
def test_range_ends_are_what_libjpeg_writes_for_black_and_white(subsampling, tmp_path):
    """Pillow (libjpeg's quantizer) writing pure black and pure white images at every quality: black's DC
    is exactly the lower end of the range, white's within it, every AC 0; the tables are the reference's."""
    for q in QUALITIES:
        for value in (0, 255):
            path = tmp_path / "x.jpg"
            Image.new("RGB", (16, 16), (value,) * 3).save(path, "JPEG", quality=q, subsampling=subsampling)
            d = jpeglib.read_dct(str(path))
            qt = np.asarray(d.qt)[0]
            np.testing.assert_array_equal(qt, tables.quant_tables(q)[0])
            lo, hi = tables.coefficient_range(qt.astype(np.int64))
            dc = np.asarray(d.Y)[..., 0, 0]
            assert np.all((dc >= lo[0, 0]) & (dc <= hi[0, 0])), (q, value)
            if value == 0:
                assert np.all(dc == lo[0, 0]), (q, dc.ravel()[:3], lo[0, 0])


def _extreme_image(size=(32, 48)):
    """A photo with pure black and pure white 8x8-aligned blocks (and one straddling the grid)."""
    x = photos.photo("astronaut", size).copy()
    x[:8, :16] = 0
    x[8:16, 16:24] = 255
    x[16:32, :8] = 0
    x[19:29, 27:45] = 255
    return x


@pytest.mark.parametrize("subsampling", ["444", "420"])
def test_every_candidate_within_range_and_written_exactly(subsampling, tmp_path):
    """Every coefficient stepped away from plain JPEG (up to 3 steps, all at once, outwards) at every
    quality 1-100: the candidate stays inside coefficient_range, io writes it, jpeglib reads it back
    unchanged. Without the clip, qualities 96-100 step the black blocks' DC to -1025."""
    x = jnp.asarray(_extreme_image())

    @jax.jit
    def candidate(ql, qc):
        plain = codec.encode(x, qt_luma=ql, qt_chroma=qc, subsampling=subsampling)
        z0 = jnp.concatenate([jnp.ravel(c) for c in plain.components])
        n = z0.size
        delta = jnp.concatenate([jnp.ravel(jnp.broadcast_to(q, c.shape)) for q, c in zip(plain.tables, plain.components)])
        outward = jnp.where(z0 < 0, -1, 1).astype(jnp.int32)
        plan = qdct.DCTPlan(plain, z0, jnp.full(n, 0.49), delta.astype(jnp.float32), outward, jnp.ones(n),
                            jnp.arange(n, dtype=jnp.int32), jnp.zeros(n), jnp.int32(n), jnp.int32(0))
        coeffs, _ = qdct.plan_candidate(plan, jnp.int32(n), max_steps=3)
        return coeffs, z0 + 3 * outward

    clipped_at = []
    for q in QUALITIES:
        ql, qc = (jnp.asarray(t) for t in tables.quant_tables(q))
        coeffs, unclipped = jax.device_get(candidate(ql, qc))
        for z, qt in zip(coeffs.components, coeffs.tables):
            lo, hi = tables.coefficient_range(np.asarray(qt, np.int64))
            assert np.all((z >= lo) & (z <= hi)), q
        lo_y = tables.coefficient_range(np.asarray(coeffs.qt_luma, np.int64))[0][0, 0]
        if unclipped.min() < lo_y:
            clipped_at.append(q)
        path = tmp_path / f"q{q}.jpg"
        jpeg.write_jpeg(path, coeffs)
        back = jpeglib.read_dct(str(path))
        for a, b in zip(coeffs.components, (back.Y, back.Cb, back.Cr)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert set(range(96, 101)) <= set(clipped_at)  # the test reaches the failing case


def test_out_of_range_is_a_qcamo_error_naming_the_file(tmp_path):
    x = _extreme_image((16, 16))
    c = jax.device_get(codec.encode(jnp.asarray(x), 100))
    y = np.array(c.y)
    assert y[0, 0, 0, 0] == -1024
    y[0, 0, 0, 0] = -1025
    with pytest.raises(JpegCoefficientError) as err:
        jpeg.write_jpeg(tmp_path / "bad.jpg", c.replace(y=y))
    assert isinstance(err.value, QcamoError) and isinstance(err.value, ValueError)
    msg = str(err.value)
    assert "bad.jpg" in msg and "-1025" in msg and "DC in -1024..1023" in msg and "\n" not in msg
    assert not (tmp_path / "bad.jpg").exists()
