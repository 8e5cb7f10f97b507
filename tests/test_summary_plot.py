"""``summary.png`` pages: every record drawn once, paging, refused and missing outputs, no warnings."""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image

from qcamo_jax import report, summary_plot


def _records(folder, n):
    """``n`` records of small images, with one refused input and one output file that is missing."""
    rng = np.random.default_rng(0)
    recs = []
    for i in range(n):
        h, w = (24, 32) if i % 2 else (40, 20)
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        src, dst = folder / f"in_{i:02d}_{'x' * (60 if i == 5 else 3)}.png", folder / f"out_{i:02d}.png"
        Image.fromarray(img).save(src)
        Image.fromarray(np.clip(img.astype(int) + rng.integers(-2, 3, img.shape), 0, 255).astype(np.uint8)).save(dst)
        rec = dict(path=str(src), output=str(dst), error=None, original_score=70.0 - i / 10, final_score=48.0,
                   worst_score=47.0 + (i % 7 == 0) * 5, success_saved=True, success=i % 7 != 0, psnr=40.0,
                   ssim=0.98, seconds=0.5)
        if i == 3:
            rec.update(output=None, error="not an image (format not recognised)", original_score=None,
                       final_score=None, worst_score=None, success_saved=None, success=None, psnr=None)
        recs.append(rec)
    (folder / "out_10.png").unlink()  # an output deleted after the run
    return recs


def test_forty_images_give_four_pages_with_every_image_once(tmp_path):
    recs = _records(tmp_path, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any matplotlib warning (missing glyph, layout) fails the test
        pages = report.write_summary(tmp_path / "summary.png", recs, target=50.0)
    assert [p.path.name for p in pages] == ["summary.png", "summary-2.png", "summary-3.png", "summary-4.png"]
    assert [len(p.images) for p in pages] == [12, 12, 12, 4]
    assert [name for p in pages for name in p.images] == [r["path"] for r in recs]
    for p in pages:
        with Image.open(p.path) as im:
            assert im.format == "PNG" and im.width == 16 * summary_plot.DPI and im.height > 600

    # A shorter run in the same folder removes the pages it no longer has.
    pages = report.write_summary(tmp_path / "summary.png", recs[:13], target=50.0)
    assert [p.path.name for p in pages] == ["summary.png", "summary-2.png"]
    assert not (tmp_path / "summary-3.png").exists() and not (tmp_path / "summary-4.png").exists()


def test_no_records_still_draws_a_page(tmp_path):
    pages = report.write_summary(tmp_path / "summary.png", [], target=50.0)
    assert [(p.path.name, p.images) for p in pages] == [("summary.png", ())]


def test_zoom_window_is_where_the_change_is():
    diff = np.zeros((100, 150), np.uint8)
    diff[::7, ::5] = 3  # weak change everywhere
    diff[60:75, 100:120] = 9  # the strongest change
    y, x, z = summary_plot.strongest_window(diff, 32)
    assert z == 32 and y <= 60 and y + z >= 75 and x <= 100 and x + z >= 120
    # Brute force agrees on the best window's sum.
    best = max(int(diff[i:i + z, j:j + z].sum()) for i in range(100 - z + 1) for j in range(150 - z + 1))
    assert int(diff[y:y + z, x:x + z].sum()) == best
    assert summary_plot.strongest_window(np.ones((10, 12), np.uint8), 32)[2] == 10  # small image: whole side


def test_page_stems():
    assert [summary_plot.is_page_stem(s) for s in ("summary", "summary-2", "summary-13", "summary-0", "summary-x",
                                                   "summary_2", "my-summary")] == [True, True, True, False, False,
                                                                                   False, False]
    assert all(summary_plot.is_page_stem(summary_plot.page_path("o/summary.png", k).stem) for k in range(1, 30))
