"""DCT-domain quantizer: exact coefficients, true loss, files that real encoders keep."""

import shutil
import subprocess

import chex
import jax
import jax.numpy as jnp
import jpeglib
import numpy as np
import pytest
from PIL import Image

from counting import counting_backward
import photos
from qcamo_jax.jpeg import codec
from qcamo_jax.jpeg.reencoders import ReencoderSet
from qcamo_jax.quantize import dct as qdct
from test_quantize_spatial import float_attack, toy_model

SIZE = (32, 48)
NAMES = ("astronaut", "chelsea", "coffee", "rocket")


# The core quantizer on the file as saved (empty re-encoder set); sets are tested in test_quantize_survive.py.
CFG = qdct.DCTConfig(quality=90, dct_method="ifast", margin=0.1, survive=ReencoderSet())


@pytest.fixture(scope="module")
def data():
    """Toy model, photos, targets 1 point below their clean scores and a float attack reaching them."""
    score_fn, variables = toy_model(SIZE)
    originals = photos.photos(SIZE, names=NAMES)
    clean = jax.vmap(lambda x: score_fn(variables, x))(originals.astype(jnp.float32))
    targets = np.asarray(clean) - 1.0
    adv = np.asarray(float_attack(score_fn, variables, originals, jnp.asarray(targets), overshoot=0.5))
    return score_fn, variables, originals, adv, targets


@pytest.fixture(scope="module", params=["attack", "gradient"])
def setup(request, data):
    """The core tests run with both directions: the default under a set (the attack's change) and the
    paper's (the loss gradient, the ImageMagick setting)."""
    # The search over one family of candidates (the bracket rescue of "attack" is tested on its own below).
    cfg = CFG._replace(candidates=request.param, bracket_rescue=False)
    score_fn, variables, originals, adv, targets = data
    chex.clear_trace_counter()  # chex counts traces per source location: each direction compiles once

    @jax.jit
    @chex.assert_max_traces(n=1)  # every test below reuses this one compiled program
    def run(o, a, t):
        return qdct.quantize_dct(score_fn, variables, o, a, t, cfg)

    coeffs, decoded, res = run(originals, adv, targets)
    return score_fn, variables, originals, adv, targets, cfg, coeffs, np.asarray(decoded), res, run


def test_success_within_max_steps_and_true_score(setup):
    score_fn, variables, originals, adv, targets, cfg, coeffs, decoded, res, run = setup
    assert np.all(np.asarray(res.success)), np.asarray(res.score) - targets
    for i in range(len(originals)):
        plain = codec.encode(originals[i], 90, dct_method="ifast")
        ours = qdct.unbatch(coeffs, i)
        changed = 0
        for a, b in zip(ours.components, plain.components):
            d = np.abs(np.asarray(a) - np.asarray(b))
            assert d.max() <= cfg.max_steps
            changed += int((d > 0).sum())
        assert changed == int(res.flipped[i]) > 0
        np.testing.assert_array_equal(np.asarray(codec.decode(ours)), decoded[i])
    true = np.asarray(jax.vmap(lambda x: score_fn(variables, x))(decoded.astype(np.float32)))
    np.testing.assert_allclose(np.asarray(res.score), true, atol=1e-4)
    assert np.all(true < targets - cfg.margin)


def test_lambda_zero_is_plain_jpeg(setup):
    score_fn, variables, originals, adv, targets, cfg, *_, run = setup
    coeffs, decoded, res = run(originals, adv, targets + 100.0)
    assert np.all(np.asarray(res.flipped) == 0) and np.all(np.asarray(res.lam) == 0)
    assert np.all(np.asarray(res.already_below_target)) and np.all(np.asarray(res.success))
    for i in range(len(originals)):
        plain = codec.encode(originals[i], 90, dct_method="ifast")
        for a, b in zip(qdct.unbatch(coeffs, i).components, plain.components):
            np.testing.assert_array_equal(a, np.asarray(b))


def test_one_step_fewer_fails(setup):
    """Minimality of the bisection: undoing the last coefficient moved brings the loss back above -margin."""
    score_fn, variables, originals, adv, targets, cfg, coeffs, decoded, res, run = setup
    plan_and_pick = jax.jit(
        lambda o, a, k: (qdct.plan_candidate(qdct.plan_dct(score_fn, variables, o, a, cfg), k - 1, cfg.max_steps),
                         qdct.plan_candidate(qdct.plan_dct(score_fn, variables, o, a, cfg), k, cfg.max_steps))
    )
    for i in range(len(originals)):
        k = int(res.flipped[i])
        (prev, _), (cur, lam) = plan_and_pick(originals[i], adv[i], jnp.int32(k))
        s_prev = float(score_fn(variables, codec.decode(prev).astype(jnp.float32)))
        assert s_prev >= targets[i] - cfg.margin - 1e-4
        np.testing.assert_array_equal(np.asarray(codec.decode(cur)), decoded[i])
        np.testing.assert_allclose(float(lam), float(res.lam[i]), rtol=1e-4)


def test_file_holds_exact_coefficients_and_decodes_identically(setup, tmp_path):
    *_, coeffs, decoded, res, run = setup
    for i in range(2):
        path = tmp_path / f"{i}.jpg"
        one = qdct.unbatch(coeffs, i)
        qdct.write_jpeg(path, one)
        r = jpeglib.read_dct(str(path))
        for a, b in zip((r.Y, r.Cb, r.Cr), one.components):
            np.testing.assert_array_equal(a, b)
        # Pillow (libjpeg-turbo, islow) decodes it to exactly the pixels the quantizer scored.
        np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), decoded[i])


@pytest.mark.skipif(shutil.which("convert") is None, reason="ImageMagick not installed")
def test_imagemagick_q90_keeps_coefficients(tmp_path):
    """An output re-encoded by ImageMagick -quality 90 keeps >= 99% of its coefficients (384x512 photos)."""
    score_fn, variables = toy_model((64, 64))
    originals = photos.photos((384, 512), names=("coffee",))
    adv = originals.astype(np.float32) + np.random.default_rng(0).normal(0, 2, originals.shape).astype(np.float32)
    clean = jax.vmap(lambda x: score_fn(variables, x))(originals.astype(jnp.float32))
    cfg = qdct.DCTConfig.for_imagemagick(90)
    coeffs, _, res = jax.jit(lambda o, a, t: qdct.quantize_dct(score_fn, variables, o, a, t, cfg))(originals, adv, clean - 0.5)
    for i in range(len(originals)):
        src, dst = tmp_path / f"{i}.jpg", tmp_path / f"{i}_im.jpg"
        one = qdct.unbatch(coeffs, i)
        qdct.write_jpeg(src, one)
        subprocess.run(["convert", str(src), "-quality", "90", str(dst)], check=True)
        r = jpeglib.read_dct(str(dst))
        kept = sum(int((a == b).sum()) for a, b in zip((r.Y, r.Cb, r.Cr), one.components))
        total = sum(b.size for b in one.components)
        assert int(res.flipped[i]) > 1000  # the file really differs from plain JPEG
        assert kept / total >= 0.99, kept / total


def test_one_trace_per_shape(setup):
    score_fn, variables, originals, adv, targets, cfg, coeffs, decoded, res, run = setup
    # `run` carries chex.assert_max_traces(n=1): calls with new values of the same shape reuse it.
    _, _, r = run(originals, adv + 0.5, targets - 0.1)
    assert r.score.shape == (len(originals),)


def _in_encoder_steps(original, adversarial, quality, dct_method):
    """Per component ``(z0, c / Delta, (c + u) / Delta)`` as numpy: the plain file's integers and where
    the original's and the attacked image's coefficients lie, in the steps of the file's encoder."""
    plain = codec.encode(original, quality, dct_method=dct_method)
    fwd = codec.forward_dct(original, quality, dct_method=dct_method)
    ca = codec.forward_dct_float(jnp.clip(jnp.asarray(adversarial, jnp.float32), 0, 255))
    c0 = codec.forward_dct_float(jnp.asarray(original, jnp.float32))
    return [(np.asarray(zp), np.asarray(r), np.asarray(r) + (np.asarray(a) - np.asarray(o)) / np.asarray(st))
            for zp, r, st, a, o in zip(plain.components, fwd.ratio, fwd.step, ca, c0)]


def test_bracket_candidates(data):
    """``candidates="bracket"``: every coefficient is an end of the attacked coefficient's bracket, within max_steps."""
    score_fn, variables, originals, adv, targets = data
    cfg = CFG._replace(candidates="bracket")
    coeffs, decoded, res = jax.jit(lambda o, a, t: qdct.quantize_dct(score_fn, variables, o, a, t, cfg))(originals[:2], adv[:2], targets[:2])
    assert np.all(np.asarray(res.success))
    for i in range(2):
        for z, (zp, _, a) in zip(qdct.unbatch(coeffs, i).components, _in_encoder_steps(originals[i], adv[i], 90, "ifast")):
            m = cfg.max_steps
            lo = np.clip(np.floor(a), zp - m, zp + m)
            hi = np.clip(np.floor(a) + 1, zp - m, zp + m)
            assert np.all((z == lo) | (z == hi))
        np.testing.assert_array_equal(np.asarray(codec.decode(qdct.unbatch(coeffs, i))), np.asarray(decoded[i]))


@pytest.mark.parametrize("quality,dct_method", [(100, "islow"), (90, "ifast")])
def test_attack_candidates_follow_the_attack(data, quality, dct_method):
    """``candidates="attack"``: the path runs from plain JPEG (``lambda = 0``) through the attacked image
    (``lambda = 1``: each coefficient the integer nearest the attacked image's, in the encoder's own
    steps) and beyond; the result meets the target with the true score of its exact decoding, and no
    gradient was computed."""
    score_fn, variables, originals, adv, targets = data
    cfg = qdct.DCTConfig(quality=quality, dct_method=dct_method, max_steps=40, margin=0.1, survive=ReencoderSet(),
                         candidates="attack")
    coeffs, decoded, res = jax.jit(lambda o, a, t: qdct.quantize_dct(score_fn, variables, o, a, t, cfg))(
        originals, adv, targets)
    assert np.all(np.asarray(res.success)) and np.all(np.asarray(res.flipped) > 0)
    assert np.all(np.asarray(res.gradients) == 0)
    true = np.asarray(jax.vmap(lambda x: score_fn(variables, x))(np.asarray(decoded, np.float32)))
    assert np.all(true < targets - cfg.margin)
    plan_at = jax.jit(lambda o, a, lam: (lambda p: qdct.plan_candidate(p, jnp.sum(p.sorted_lam <= lam), cfg.max_steps))(
        qdct.plan_dct(score_fn, variables, o, a, cfg)))
    for i in range(len(originals)):
        one, lam = plan_at(originals[i], adv[i], 1.0)
        assert float(lam) <= 1.0
        moved = 0
        for z, (zp, r, a) in zip(one.components, _in_encoder_steps(originals[i], adv[i], quality, dct_method)):
            z = np.asarray(z)
            inside = np.abs(a - zp) <= cfg.max_steps
            # the candidate is taken at the last switching point below 1: the remaining (1 - lambda) of
            # the attack is all a coefficient may still lack
            tol = 0.5 + (1.0 - float(lam)) * np.abs(a - r) + 1e-3
            assert np.all((np.abs(z - a) <= tol)[inside]), (np.abs(z - a) - tol)[inside].max()
            moved += int((z != zp).sum())
        assert moved > 0
        # a smaller lambda moves less of the way from the plain file
        half, _ = plan_at(originals[i], adv[i], 0.5)
        d_half = np.abs(np.asarray(codec.decode(half), np.float32) - originals[i]).sum()
        d_one = np.abs(np.asarray(codec.decode(one), np.float32) - originals[i]).sum()
        assert d_half < d_one


def test_attack_candidates_fall_back_to_the_gradient_when_the_attack_did_not_move(data):
    """An image the attack left unchanged (it met T - margin on the attacked score) gives the attack's
    direction nothing to scale; the quantizer then takes the loss gradient, so the file can still be
    moved below a target the plain file misses (here: 1 point below the clean score)."""
    score_fn, variables, originals, adv, targets = data
    cfg = qdct.DCTConfig(quality=100, max_steps=40, margin=0.1, survive=ReencoderSet(), candidates="attack")
    unmoved = originals.astype(np.float32)
    mixed = np.concatenate([unmoved[:2], adv[2:]])
    _, _, res = jax.jit(lambda o, a, t: qdct.quantize_dct(score_fn, variables, o, a, t, cfg))(originals, mixed, targets)
    assert np.asarray(res.gradients).tolist() == [1, 1, 0, 0]
    assert np.all(np.asarray(res.success)) and np.all(np.asarray(res.flipped) > 0)
    assert not np.any(np.asarray(res.already_below_target))  # the plain file alone misses the target


def test_attack_candidates_compute_no_gradient_image_by_image(data):
    """The CPU engine quantizes one image at a time: there the attack's direction runs no backward pass
    unless the attack left the image unchanged (a batch runs both branches of the fallback)."""
    score_fn, variables, originals, adv, targets = data
    cfg = qdct.DCTConfig(quality=100, max_steps=40, margin=0.1, survive=ReencoderSet(), candidates="attack")
    calls = []
    counted = counting_backward(score_fn, calls)
    run = jax.jit(lambda o, a, t: qdct.quantize_dct(counted, variables, o, a, t, cfg))
    _, _, res = jax.block_until_ready(run(originals[:1], adv[:1], targets[:1]))
    jax.effects_barrier()
    assert bool(res.success[0]) and int(res.gradients[0]) == 0 and calls == []
    _, _, res = jax.block_until_ready(run(originals[:1], originals[:1].astype(np.float32), targets[:1]))
    jax.effects_barrier()
    assert int(res.gradients[0]) == 1 and len(calls) >= 1
    grad_cfg = cfg._replace(candidates="gradient")
    calls.clear()
    jax.block_until_ready(jax.jit(lambda o, a, t: qdct.quantize_dct(counted, variables, o, a, t, grad_cfg))(
        originals[:1], adv[:1], targets[:1]))
    jax.effects_barrier()
    assert len(calls) >= 1  # the counter does see the gradient rule's backward pass


@pytest.mark.parametrize("candidates", ["gradient", "attack"])
def test_quality_100_steps_stay_in_the_baseline_range(tmp_path, candidates):
    """Issue 13 kind 1: black blocks at quality 100 have DC -1024; a step below is clipped, the file writes.

    ``"gradient"``: a black block (plain DC -1024) moved down; ``"attack"``: a block at level 2 that the
    attack darkens to 0, scaled far past ``lambda = 1`` (40 steps would reach DC -1048)."""
    score_fn, variables = toy_model((16, 24))
    img = photos.photo("coffee", (16, 24)).copy()
    img[:8, :8] = 0 if candidates == "gradient" else 2
    img[8:, 16:] = 255
    originals = img[None]
    adv = originals.astype(np.float32) + np.random.default_rng(0).normal(0, 3, originals.shape).astype(np.float32)
    if candidates == "attack":
        adv[0, :8, :8] = 0.0
    steps = 4 if candidates == "gradient" else 40
    for q in (99, 100):
        cfg = qdct.DCTConfig(quality=q, max_steps=steps, survive=ReencoderSet(), candidates=candidates)
        # the candidate with every switching point passed, each coefficient moved up to max_steps
        plan = qdct.plan_dct(score_fn, variables, originals[0], adv[0], cfg)
        one = jax.tree.map(np.asarray, qdct.plan_candidate(plan, plan.n_active, cfg.max_steps)[0])
        for c in one.components:
            ac = np.array(c)
            ac[..., 0, 0] = 0
            assert np.abs(ac).max() <= 1023 and -1024 <= c[..., 0, 0].min() and c[..., 0, 0].max() <= 1023
        assert one.y[0, 0, 0, 0] == -1024  # the dark block's DC at q >= 99 (table entry 1), clipped
        qdct.write_jpeg(tmp_path / f"{q}.jpg", one)
