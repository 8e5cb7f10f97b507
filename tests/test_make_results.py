"""scripts/make_results.py: the statistics behind docs/results.md (no model run here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mr():
    spec = importlib.util.spec_from_file_location("make_results", ROOT / "scripts" / "make_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wilson_interval_matches_scipy(mr):
    from scipy.stats import binomtest  # the reference implementation (scipy >= 1.7)

    for n in (1, 4, 10, 24, 28):
        for k in range(n + 1):
            ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
            assert mr.wilson(k, n) == pytest.approx((ref.low, ref.high), abs=2e-4), (k, n)
    assert mr.wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)  # the textbook example


def test_wilson_of_no_images_is_undefined(mr):
    assert all(np.isnan(v) for v in mr.wilson(0, 0))


def test_bootstrap_mean_brackets_the_mean_and_ignores_missing_values(mr):
    v = np.random.default_rng(1).normal(38.0, 2.0, 28)
    mean, lo, hi = mr.bootstrap_mean(list(v) + [None, float("nan")])
    assert mean == pytest.approx(v.mean()) and lo < mean < hi
    # the interval is about the standard error wide (+-1.96 sd / sqrt(n))
    assert hi - lo == pytest.approx(2 * 1.96 * v.std() / np.sqrt(v.size), rel=0.2)
    assert mr.bootstrap_mean([1.0, 2.0]) == mr.bootstrap_mean([1.0, 2.0])  # fixed seed: reproducible table


def test_panel_names_real_encoders_of_the_registry(mr):
    from qcamo_jax.jpeg import encoders

    for name, q in mr.PANEL:
        assert name in encoders.ENCODERS and 1 <= q <= 100
