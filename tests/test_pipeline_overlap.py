"""A batch's host work overlaps the next batch's engine call (issue 14 item 4), without changing results.

:func:`qcamo_jax.pipeline.run` hands each batch's host half (:meth:`BatchRunner.finish`: scoring, the
real re-encoders, writing) to a worker thread and goes on with the next batch's engine call. Checked
with a stand-in engine (the input written back as a PNG) so the timing is the test's own: the next
engine call starts while the previous batch's host work is still running, records and reports stay in
input order and equal a run without overlap, and the progress events count every image once.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from PIL import Image

import photos
from qcamo_jax import pipeline
from qcamo_jax.pipeline import batch as batch_mod
from qcamo_jax.pipeline.engine import Encoded
from qcamo_jax.pipeline.outputs import encode_png

SHAPE = (64, 96)
SETTINGS = pipeline.Settings(target=45.0, method="pgd", quantize="none", survive="none")
N_IMAGES = 2 * len(photos.PHOTO_NAMES)  # each photo and its mirror image
HOST_SECONDS = 0.4


class _Echo:
    """Engine stand-in: each image back as PNG bytes, reporting progress units as it goes (like the
    compiled program's callbacks); notes when each call starts and in which thread."""

    identity = "echo-engine"
    listener = None
    UNITS = 5  # per image

    def __init__(self):
        self.starts, self.threads = [], set()

    def expected_units(self, shape, batch):
        return self.UNITS * batch

    def __call__(self, images, seeds):
        self.starts.append(time.perf_counter())
        self.threads.add(threading.get_ident())
        for _ in range(self.UNITS * len(images)):
            if self.listener is not None:
                self.listener.units(1)
            time.sleep(0.005)
        return [Encoded(encode_png(np.asarray(im, np.uint8)), {}) for im in images]


def _inputs(folder):
    folder.mkdir()
    for name in photos.PHOTO_NAMES:
        img = photos.photo(name, SHAPE)
        Image.fromarray(img).save(folder / f"{name}.png")
        Image.fromarray(np.ascontiguousarray(img[:, ::-1])).save(folder / f"{name}_mirrored.png")
    return folder


@pytest.fixture
def slow_host(monkeypatch):
    """Make every batch's host work take at least HOST_SECONDS, and record when each one ends."""
    ends, threads = [], set()
    finish = batch_mod.BatchRunner.finish

    def slow(self, attacked):
        threads.add(threading.get_ident())
        time.sleep(HOST_SECONDS)
        out = finish(self, attacked)
        ends.append(time.perf_counter())
        return out

    monkeypatch.setattr(batch_mod.BatchRunner, "finish", slow)
    return ends, threads


@pytest.mark.parametrize("overlap", [True, False])
def test_next_engine_call_runs_during_the_host_work(tmp_path, tiny, slow_host, overlap):
    ends, host_threads = slow_host
    engine = _Echo()
    log = tmp_path / "events.jsonl"
    result = pipeline.run([_inputs(tmp_path / "in")], tmp_path / "out", tiny, SETTINGS, engine=engine, batch_size=3,
                          progress=False, summary=False, log_json=log, overlap=overlap)
    assert result.exit_code in (0, 3) and result.processed == N_IMAGES
    assert len(engine.starts) == len(ends) == 4  # batches of 3, 3, 3, 1
    if overlap:  # batch i + 1 went to the engine before batch i's host work was over, in another thread
        assert all(engine.starts[i + 1] < ends[i] for i in range(3))
        assert host_threads.isdisjoint(engine.threads)
    else:  # one after the other, in one thread
        assert all(engine.starts[i + 1] > ends[i] for i in range(3))
        assert host_threads == engine.threads
    # records in input order, each with its own output
    assert [r["path"] for r in result.records] == sorted(r["path"] for r in result.records)
    assert all(r["error"] is None and r["output"] for r in result.records)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [r["path"] for r in (report["images"] if isinstance(report, dict) else report)] == \
        [r["path"] for r in result.records]
    # progress: never backwards, every image counted once, the last event at all images
    events = [json.loads(line) for line in log.read_text().splitlines()]
    done = [e["images_done"] for e in events if e["event"] == "progress"]
    inside = [e for e in events if e["event"] == "progress" and e["batch_fraction"] < 1]
    assert len(inside) >= 4  # the units moved the bar inside every batch
    assert done == sorted(done) and done[-1] == N_IMAGES
    assert sum(e["event"] == "image_done" for e in events) == N_IMAGES


def test_overlap_changes_no_result(tmp_path, tiny):
    """The same records (scores, hashes) as a run whose host work is done before the next engine call."""
    inputs = _inputs(tmp_path / "in")
    overlapped = pipeline.run([inputs], tmp_path / "a", tiny, SETTINGS, engine=_Echo(), batch_size=3, progress=False,
                              summary=False)
    serial = pipeline.run([inputs], tmp_path / "b", tiny, SETTINGS, engine=_Echo(), batch_size=3, progress=False,
                          summary=False, overlap=False)
    keys = ("path", "original_score", "final_score", "worst_score", "output_sha256", "l2", "psnr", "success")
    assert [{k: r[k] for k in keys} for r in overlapped.records] == [{k: r[k] for k in keys} for r in serial.records]
