"""What the settings mean for the compiled program (qcamo_jax/pipeline/methods.py): the attack's score."""

import jax.numpy as jnp
import numpy as np
import pytest

import photos
from qcamo_jax.jpeg import reencoders
from qcamo_jax.pipeline import Settings, methods
from qcamo_jax.quantize import survival

SURVIVE = "imagemagick:90,pillow-420:75"


def _detail(variables, x):
    """A score that JPEG lowers: mean squared horizontal difference (detail that quantization removes)."""
    return jnp.mean(jnp.square(x[:, 1:] - x[:, :-1])) * variables["scale"]


@pytest.mark.parametrize("method", ["pgd", "jpeg-pgd"])
def test_spatial_attack_scores_the_worst_member(method):
    """The spatial quantizer cannot bridge a member the attack left above T: the attack's score is the max."""
    settings = Settings(method=method, quantize="spatial", survive=SURVIVE)
    fn = methods.attack_score_fn(_detail, settings)
    img = jnp.asarray(photos.photo("chelsea", (32, 48)), jnp.float32)
    v = {"scale": jnp.float32(1.0)}
    emus = reencoders.resolve(SURVIVE).emulations("png")
    worst = float(survival.smooth_score(_detail, v, img, emus, "worst"))
    mean = float(survival.smooth_score(_detail, v, img, emus, "mean"))
    assert worst > mean + 1e-3  # the two reductions differ here, so the test can tell them apart
    np.testing.assert_allclose(float(fn(v, img)), worst, rtol=1e-6)


def test_dct_attacks_keep_their_scores():
    """pgd + dct attacks the plain score (the quantizer follows the set's gradient); jpeg-pgd + dct the mean
    over the written file's round trips."""
    img = jnp.asarray(photos.photo("chelsea", (32, 48)), jnp.float32)
    v = {"scale": jnp.float32(1.0)}
    assert methods.attack_score_fn(_detail, Settings(survive=SURVIVE)) is _detail
    fn = methods.attack_score_fn(_detail, Settings(method="jpeg-pgd", survive=SURVIVE))
    assert float(fn(v, img)) < float(_detail(v, img))  # through JPEG round trips: detail is lost
