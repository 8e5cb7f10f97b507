"""Distortion metrics against scikit-image."""

import numpy as np
import skimage.metrics

import photos
from qcamo_jax import metrics


def test_psnr_ssim_l2_match_skimage():
    a = photos.photos((40, 56), names=("astronaut", "coffee"))
    rng = np.random.default_rng(0)
    b = np.clip(a.astype(np.int32) + rng.integers(-6, 7, a.shape), 0, 255).astype(np.uint8)
    ps = np.asarray(metrics.psnr(a, b))
    ss = np.asarray(metrics.ssim(a, b))
    l2 = np.asarray(metrics.l2(a, b))
    for i in range(len(a)):
        np.testing.assert_allclose(ps[i], skimage.metrics.peak_signal_noise_ratio(a[i], b[i], data_range=255), rtol=1e-5)
        ref = skimage.metrics.structural_similarity(
            a[i], b[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1
        )
        np.testing.assert_allclose(ss[i], ref, atol=2e-3)
        np.testing.assert_allclose(l2[i], np.linalg.norm(a[i].astype(float) - b[i]), rtol=1e-5)
    assert np.isinf(np.asarray(metrics.psnr(a, a))).all()
    np.testing.assert_allclose(np.asarray(metrics.ssim(a, a)), 1.0, atol=1e-5)
