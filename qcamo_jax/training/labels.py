"""MOS-like labels: distortion strength measured by SSIM against the pristine view, calibrated per family.

SSIM (Wang et al., IEEE TIP 2004; here the mean of the three RGB channels' SSIM, Gaussian window
sigma 1.5) measures how far a distorted image is from its pristine version, image by image. Its raw
value is not comparable ACROSS distortion families: on our training views white noise of sigma 6
already gives a median SSIM of 0.70 while a Gaussian blur of sigma 4.5 keeps 0.89, although the blur is
the far stronger degradation to a viewer. So each family gets its own scale:

    d_img = ln(ssim) / ln(ssim_ref[family])        (0 = pristine, 1 = typical strongest level)
    d = median_level(d_img) + CONTENT_WEIGHT * (d_img - median_level(d_img))
    mos = clip(MOS_PRISTINE - (MOS_PRISTINE - STRONGEST_MOS[family]) * d, MOS_FLOOR, MOS_PRISTINE)

where ``ssim_ref[family]`` is the median SSIM of the family's strongest training level over the
training views (computed by :func:`calibrate`, stored in the dataset metadata) and ``median_level``
the median of ``d_img`` over all views at the same family and level. So the label is the distortion
LEVEL, calibrated by SSIM onto one scale for all families, plus half of the image's own SSIM deviation
(content matters: the same blur costs a smooth sky less than grass). The pristine image scores 80, the
strongest blur / noise / JPEG levels about 20, and within a family the label falls with the level.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

MOS_PRISTINE = 80.0
MOS_FLOOR = 10.0
#: Share of an image's own SSIM deviation from its level's median that enters its label.
CONTENT_WEIGHT = 0.5

#: Label of the median image at each family's strongest training level (a judgement call: colour and
#: exposure changes are milder quality losses than heavy blur, noise or blocking).
STRONGEST_MOS = {
    "blur": 20.0, "noise": 20.0, "jpeg": 20.0, "contrast": 30.0, "brighten": 35.0, "darken": 30.0,
    "desaturate": 50.0, "oversaturate": 40.0,
}


def ssim_rgb(reference: np.ndarray, distorted: np.ndarray) -> float:
    """SSIM of two ``uint8 [H, W, 3]`` images (mean over RGB channels)."""
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            reference, distorted, channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False,
        )
    )


def calibrate(ssim: np.ndarray, catalogue: Sequence[Sequence]) -> dict[str, float]:
    """``{family: median SSIM of its strongest level}`` from ``ssim`` ``[V, D]`` and the catalogue."""
    ref = {}
    for family in STRONGEST_MOS:
        idx = [j for j, (f, _, _) in enumerate(catalogue) if f == family]
        if idx:
            strongest = max(idx, key=lambda j: catalogue[j][2])
            ref[family] = float(np.median(ssim[:, strongest]))
    return ref


def strength(ssim, family: str, reference: Mapping[str, float]) -> np.ndarray:
    """Per-image distortion strength ``d_img = ln(ssim) / ln(ssim_ref[family])`` (0 = pristine)."""
    s = np.clip(np.asarray(ssim, np.float64), 1e-6, 1.0)
    return np.log(s) / np.log(reference[family])


def mos_from_strength(d, family: str) -> np.ndarray:
    """Label (0-100 scale) of strength ``d``: 80 at 0, ``STRONGEST_MOS[family]`` at 1, clipped."""
    mos = MOS_PRISTINE - (MOS_PRISTINE - STRONGEST_MOS[family]) * np.asarray(d, np.float64)
    return np.clip(mos, MOS_FLOOR, MOS_PRISTINE)


def label_table(ssim: np.ndarray, catalogue: Sequence[Sequence], reference: Mapping[str, float]) -> np.ndarray:
    """Labels ``float32 [V, D]`` for a dataset's ``ssim`` ``[V, D]`` (column j = ``catalogue[j]``)."""
    out = np.empty(ssim.shape, np.float32)
    for j, (family, _, _) in enumerate(catalogue):
        if family == "pristine":
            out[:, j] = MOS_PRISTINE
            continue
        d_img = strength(ssim[:, j], family, reference)
        d_med = np.median(d_img)
        out[:, j] = mos_from_strength(d_med + CONTENT_WEIGHT * (d_img - d_med), family)
    return out
