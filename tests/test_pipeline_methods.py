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
    """pgd + dct attacks the plain score (the quantizer scales the attack until it holds); jpeg-pgd + dct the mean
    over the written file's round trips."""
    img = jnp.asarray(photos.photo("chelsea", (32, 48)), jnp.float32)
    v = {"scale": jnp.float32(1.0)}
    assert methods.attack_score_fn(_detail, Settings(survive=SURVIVE)) is _detail
    settings = Settings(method="jpeg-pgd", survive=SURVIVE)
    fn = methods.attack_score_fn(_detail, settings)
    # The written file (the quantizer's quality, DCT and sampling) through its differentiable JPEG, then
    # the mean over {as saved} + the set's round trips of that file.
    from qcamo_jax.quantize.jpeg_aware import jpeg_transform

    config = methods.quantizer_config(settings)
    written = jpeg_transform(config)(img)
    emus = reencoders.resolve(SURVIVE).emulations(config.subsampling)
    want = float(survival.smooth_score(_detail, v, written, emus, "mean"))
    assert abs(want - float(_detail(v, img))) > 1e-2  # the round trips change this score: the test can tell
    np.testing.assert_allclose(float(fn(v, img)), want, rtol=1e-6)


def test_written_quality_gets_the_reach_of_five_quality_90_steps():
    """``--quality Q`` without ``max_steps``: the bound scales with the IJG tables (reach_steps); the
    default written file is quality 100 with 40; an explicit ``max_steps`` wins; ImageMagick keeps 1."""
    from qcamo_jax.jpeg import tables
    from qcamo_jax.quantize.dct import DCTConfig, reach_steps

    assert (reach_steps(90), reach_steps(95), reach_steps(100), reach_steps(75), reach_steps(10)) == (5, 10, 40, 2, 1)
    # What the bound is for: the reach in DCT units at Q stays within a factor 2 of 5 quality-90 steps
    # (mean over the luma table; tables.quant_tables is checked against libjpeg in test_jpeg_codec).
    want = 5 * float(np.mean(tables.quant_tables(90)[0]))
    for q in range(60, 101):
        reach = reach_steps(q) * float(np.mean(tables.quant_tables(q)[0]))
        assert want / 2.5 <= reach <= want * 2, (q, reach, want)
    assert methods.quantizer_config(Settings(quality=95)).max_steps == 10
    assert methods.quantizer_config(Settings()) == DCTConfig(margin=methods.DEFAULT_MARGIN)
    assert DCTConfig().quality == 100 and DCTConfig().max_steps == 40
    assert methods.quantizer_config(Settings(quality=95, attack_options={"max_steps": 3})).max_steps == 3
    assert methods.quantizer_config(Settings(survive="imagemagick")).max_steps == 1


def test_quantizer_direction_and_its_evaluations():
    """Under a set the DCT candidates follow the attack; ImageMagick alone keeps the paper's gradient
    rule; the progress bound per image counts the gradient either way (the attack's direction falls
    back to it for an image the attack left unchanged)."""
    from qcamo_jax.quantize.search import max_evaluations

    shape = (64, 80)
    n_dct, n_px = 3 * 64 * 8 * 10, 64 * 80 * 3
    assert methods.quantizer_config(Settings()).candidates == "attack"
    assert methods.quantizer_config(Settings(survive="imagemagick")).candidates == "gradient"
    # Under a set, a second search over the bracket candidates may follow (quantize_dct_one).
    assert methods.quantizer_evaluations(Settings(survive="common"), shape) == 2 * (1 + max_evaluations(n_dct))
    assert methods.quantizer_evaluations(Settings(survive="imagemagick"), shape) == 1 + max_evaluations(n_dct)
    assert methods.quantizer_evaluations(Settings(quantize="spatial"), shape) == 1 + max_evaluations(n_px)
    assert methods.quantizer_evaluations(Settings(quantize="none"), shape) == 0


def test_search_presets_and_overrides():
    from qcamo_jax.attacks import SearchConfig
    from qcamo_jax.errors import QcamoError

    name, cfg = methods.attack_config(Settings())  # the CLI's default: thorough, with the run's margin
    assert name == "search" and cfg == SearchConfig.thorough(pgd=cfg.pgd) and cfg.pgd.margin == 1.0
    assert (cfg.pgd.steps, cfg.rtol, cfg.first_guess, cfg.budget) == (10, 0.0, 0.0, "bisection")
    _, fast = methods.attack_config(Settings(attack_options={"search": "fast"}))
    assert fast == SearchConfig(pgd=fast.pgd) and fast.pgd.steps == 5 and fast.budget == "secant"
    _, paper = methods.attack_config(Settings(attack_options={"search": "paper", "steps": 3, "search_steps": 4},
                                              max_l2=500.0))
    assert (paper.pgd.steps, paper.pgd.schedule, paper.bisection_steps, paper.eps_max) == (3, "constant", 4, 500.0)
    assert not paper.warm_start and paper.refine_steps == 0
    with pytest.raises(QcamoError, match="unknown search 'quick'"):
        methods.attack_config(Settings(attack_options={"search": "quick"}))
