"""One image that fails never costs the others (issue 13, kind 1).

A failure injected into one image of a batch - in the compiled engine call, or in the host work after it
(decoding the output) - becomes that image's ``error`` record with the exception's type and message, its
traceback goes to the log, and every other image of the batch and of the run gets its output and record.
The real case behind it: ``--quantize dct --quality 100`` on a photo with pure black 8x8 blocks
(``tests/data/cases/crushed_shadows.png``) used to stop the whole run with a ``ValueError``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import photos
from qcamo_jax import pipeline
from qcamo_jax.pipeline.engine import Encoded

SHAPE = (64, 96)
FAST = pipeline.Settings(target=45.0, method="pgd", quantize="none", attack_options={"steps": 1, "search_steps": 1})
CASES = Path(__file__).parent / "data" / "cases"


@pytest.fixture(scope="module")
def model(tiny):
    return tiny


@pytest.fixture(scope="module")
def real_engine(model):
    return pipeline.make_engine(model, FAST)


def _inputs(folder: Path) -> dict[str, np.ndarray]:
    folder.mkdir()
    images = {name: photos.photo(name, SHAPE) for name in ("astronaut", "coffee", "rocket")}
    for name, img in images.items():
        Image.fromarray(img).save(folder / f"{name}.png")
    return images


class _Injected:
    """Wraps the real engine; ``mode`` says how the image equal to ``bad`` fails."""

    def __init__(self, engine, bad: np.ndarray, mode: str):
        self.engine, self.bad, self.mode = engine, bad, mode
        self.identity = f"{engine.identity}:injected-{mode}"
        self.calls = 0

    def __call__(self, images, seeds):
        self.calls += 1
        marked = [bool(np.array_equal(im, self.bad)) for im in images]
        if self.mode == "raise" and any(marked):
            raise RuntimeError("injected failure in the compiled call")
        out = self.engine(images, seeds)
        if self.mode == "garbage":
            out = [Encoded(b"not an image file", e.extras) if m else e for e, m in zip(out, marked)]
        return out


@pytest.mark.parametrize("mode", ["raise", "garbage"])
def test_failure_of_one_image_leaves_the_rest_of_the_batch(tmp_path, model, real_engine, mode):
    images = _inputs(tmp_path / "in")
    engine = _Injected(real_engine, images["coffee"], mode)
    logs: list[str] = []
    result = pipeline.run([tmp_path / "in"], tmp_path / "out", model, FAST, engine=engine, batch_size=3,
                          progress=False, summary=False, log=logs.append)
    by_name = {Path(r["path"]).stem: r for r in result.records}
    bad = by_name["coffee"]
    assert bad["output"] is None and bad["error"].startswith("failed: ")
    kind = "RuntimeError: injected failure" if mode == "raise" else "cannot identify image file"
    assert kind in bad["error"] or "UnidentifiedImageError" in bad["error"], bad["error"]
    assert "\n" not in bad["error"]
    for name in ("astronaut", "rocket"):
        rec = by_name[name]
        assert rec["error"] is None and Path(rec["output"]).is_file(), rec
    assert result.failed == 1 and result.processed == 2 and result.exit_code != 0
    assert any("Traceback" in line for line in logs)  # the traceback is in the log
    if mode == "raise":
        assert engine.calls == 1 + 3  # the batch, then each image alone (same batch size: no new compile)
    assert real_engine.traces == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [r["error"] is None for r in report] == [r["error"] is None for r in result.records]


@pytest.mark.parametrize("quality", [100])  # 1-100 at the codec level: tests/test_jpeg_coefficient_range.py
def test_dct_at_high_quality_on_crushed_shadows_writes_every_output(tmp_path, model, quality):
    """The shipped case: pure black blocks at quality 96-100 (a DC step used to leave the baseline range)."""
    src = tmp_path / "in"
    src.mkdir()
    Image.open(CASES / "crushed_shadows.png").save(src / "crushed_shadows.png")
    Image.fromarray(photos.photo("astronaut", (192, 256))).save(src / "astronaut.png")
    settings = pipeline.Settings(target=45.0, quantize="dct", quality=quality, survive="imagemagick",
                                 attack_options={"steps": 1, "search_steps": 1})
    result = pipeline.run([src], tmp_path / "out", model, settings, batch_size=2, progress=False, summary=False)
    assert [r["error"] for r in result.records] == [None, None]
    for r in result.records:
        with Image.open(r["output"]) as im:
            im.load()
            assert im.format == "JPEG"
