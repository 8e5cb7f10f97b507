"""An image's output does not depend on ``--batch-size`` or on which images share its batch.

XLA chooses convolution algorithms by shape, so the same image scored in a batch of 1 and of 3 gave
scores that differed in the 7th digit (74.40466 / 74.40465 with this tiny model), and the attack,
which stops on a score threshold, can then take another path. The pipeline therefore runs every image
alone inside its compiled program (``lax.map``): these runs compare real outputs, byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import photos
from qcamo_jax import fileio, pipeline

SHAPE = (64, 96)
NAMES = photos.PHOTO_NAMES
FAST = pipeline.Settings(target=45.0, method="pgd", quantize="spatial", survive="none",
                         attack_options={"steps": 2, "search_steps": 2})


@pytest.fixture(scope="module")
def model(tiny):
    return tiny


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    for name in NAMES:
        Image.fromarray(photos.photo(name, SHAPE)).save(d / f"{name}.png")
    return d


def _outputs(result) -> dict[str, tuple]:
    """Per input: output bytes hash and the record without timing and output folder."""
    out = {}
    for r in result.records:
        rec = {k: v for k, v in r.items() if k not in ("seconds", "output")}
        out[Path(r["path"]).name] = (fileio.sha256_file(r["output"]), rec)
    return out


def test_outputs_do_not_depend_on_the_batch_size_or_the_batch(tmp_path, model, inputs):
    engine = pipeline.make_engine(model, FAST)
    runs = {b: pipeline.run([inputs], tmp_path / f"b{b}", model, FAST, engine=engine, batch_size=b, progress=False,
                            summary=False) for b in (1, 3, 8)}
    ref = _outputs(runs[1])
    assert len(ref) == len(NAMES)
    for b in (3, 8):
        assert _outputs(runs[b]) == ref, f"batch size {b} changed outputs"
    # Other company in the batch: two of the images alone, in one batch of two.
    pair = sorted(inputs.iterdir())[1:3]
    alone = _outputs(pipeline.run(pair, tmp_path / "pair", model, FAST, engine=engine, batch_size=2, progress=False,
                                  summary=False))
    assert alone == {k: ref[k] for k in alone}


def test_scores_do_not_depend_on_the_chunk(model):
    x = np.stack([photos.photo(n, SHAPE) for n in NAMES])
    scorer = pipeline.Scorer(model)
    one = scorer(x, 1)
    for chunk in (2, 5, 8):
        np.testing.assert_array_equal(scorer(x, chunk), one)
    np.testing.assert_array_equal(scorer(x[::-1], 3), one[::-1])
