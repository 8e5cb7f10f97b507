"""What ``--dct islow`` matches at every quality 1-100 (issue 13, kind 7; docs/jpeg.md states the result).

References: Pillow (libjpeg's ``jpeg_set_quality(q, force_baseline=TRUE)``, as ``cjpeg -baseline`` and
ImageMagick) and jpeglib's ``write_spatial(qt=q)`` (libjpeg 6b, ``force_baseline=FALSE``, as plain
``cjpeg``). Run with ``-s`` to print the boundary.
"""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from photos import photo
from qcamo_jax import jpeg
from qcamo_jax.jpeg import tables
from test_jpeg_codec import libjpeg_coefficients

SIZE = (40, 56)
QUALITIES = range(1, 101)


@pytest.fixture(scope="module")
def image():
    return photo("coffee", SIZE)


def _encode_all(image, subsampling, force_baseline):
    """Our islow coefficients at every quality, one compile (tables traced)."""
    enc = jax.jit(lambda ql, qc: jpeg.encode(jnp.asarray(image), qt_luma=ql, qt_chroma=qc, dct_method="islow",
                                             subsampling=subsampling))
    return {q: jax.device_get(enc(*(jnp.asarray(t) for t in tables.quant_tables(q, force_baseline))))
            for q in QUALITIES}


def _same(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip((*a.components, a.qt_luma, a.qt_chroma),
                                                                               (*b.components, b.qt_luma, b.qt_chroma)))


@pytest.mark.parametrize("subsampling", ["444", "420"])
def test_islow_equals_pillow_and_cjpeg_baseline_at_every_quality(image, subsampling, tmp_path):
    ours = _encode_all(image, subsampling, force_baseline=True)
    for q in QUALITIES:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "JPEG", quality=q, subsampling=0 if subsampling == "444" else 2)
        path = tmp_path / "p.jpg"
        path.write_bytes(buf.getvalue())
        assert _same(ours[q], jpeg.read_jpeg_coefficients(path)), q


@pytest.mark.parametrize("subsampling", ["444", "420"])
def test_plain_cjpeg_differs_exactly_where_its_tables_exceed_255(image, subsampling):
    """jpeglib's write_spatial (plain cjpeg's force_baseline=FALSE): our baseline coefficients equal its
    file at every quality whose tables fit 8 bits, and only there; its 16-bit tables are reproduced by
    ``quant_tables(q, force_baseline=False)`` and then the coefficients match too."""
    baseline = _encode_all(image, subsampling, force_baseline=True)
    extended = _encode_all(image, subsampling, force_baseline=False)
    wide = []
    for q in QUALITIES:
        ref = libjpeg_coefficients(image, q, "islow", subsampling)
        if max(ref.qt_luma.max(), ref.qt_chroma.max()) > 255:
            wide.append(q)
        assert _same(baseline[q], ref) == (q not in wide), q
        assert _same(extended[q], ref), q
    print(f"cjpeg (force_baseline=FALSE) writes tables with entries > 255 at qualities {wide[0]}..{wide[-1]}; "
          f"largest entry at q5: {tables.quant_tables(5, force_baseline=False)[0].max()}")
    assert wide == list(range(1, 24))
