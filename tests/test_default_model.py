"""The embedded default model (``qcamo-small``, weights/default.safetensors) and its training code.

The quality criteria of issue 5 are checked on the eight held-out pictures (never seen in training;
four scikit-image photos and four Debian wallpapers committed as PNG in tests/data/heldout) at the
model's 384x512 input size: 96 forward passes of a 0.7-GFLOP model.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qcamo_jax.models import hub, small
from qcamo_jax.training import distortions, evaluate_default, labels, sources, train_default

HELDOUT = (
    "skimage:astronaut", "skimage:chelsea", "skimage:coffee", "skimage:rocket", "mate-backgrounds:LadyBird",
    "mate-backgrounds:Storm", "mate-backgrounds:Dune", "ukui-wallpapers:goldfish",
)


@pytest.fixture(scope="module")
def model():
    return hub.load_model("default")


@pytest.fixture(scope="module")
def heldout():
    # scikit-image photos + the committed PNG views of the Debian held-out pictures (no download).
    return evaluate_default.heldout_images(None, names=HELDOUT)


def test_builder_contract_any_size_and_gradient():
    module = small.build()
    assert tuple(module.input_size) == (384, 512)
    assert tuple(module.min_size) == (64, 64)
    module = small.build(widths=(4, 4, 4, 4, 4), head=(8, 4))  # same code path, cheap to compile
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
    shape = (1, 97, 131, 3)  # odd size, above min_size
    x = jax.random.uniform(jax.random.PRNGKey(1), shape, minval=0, maxval=255)
    out, vjp = jax.vjp(lambda x: module.apply(variables, x), x)
    assert out.shape == shape[:1] and out.dtype == jnp.float32
    (g,) = vjp(jnp.ones_like(out))
    assert g.shape == shape and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0


def test_default_checkpoint_loads_with_provenance(model):
    path = hub.WEIGHTS_DIR / hub.DEFAULT_WEIGHTS
    assert path.stat().st_size <= 20 * 2**20
    assert model.metadata["architecture"] == "qcamo-small"
    assert model.input_size == (384, 512) and model.min_size == (64, 64)
    training = json.loads(model.metadata["training"])
    assert training["seed"] == 0 and training["steps"] > 0
    assert "train_default" in model.metadata["training_command"]
    # The test photos below must really be held out of training.
    split = {s.name: s.split for s in sources.all_sources()}
    assert all(split[n] == "heldout" for n in HELDOUT)


def test_heldout_quality_criteria(model, heldout):
    assert set(heldout) == set(HELDOUT)
    res = evaluate_default.evaluate(model, heldout)
    s = res["summary"]
    assert s["pair_accuracy"] >= 0.9, res
    assert s["mean_spearman"] <= -0.8, res
    assert s["pristine_above_50"] >= 0.75, res  # "mostly above 50" (6 of these 8 at least)
    assert s["pristine_above_30"] == 1.0, res
    # Every family on its own still ranks pristine above distorted in most pairs.
    assert min(s["pair_accuracy_by_family"].values()) >= 0.75, res


def test_scores_spread_and_input_gradient_is_informative(model, heldout):
    x = jnp.asarray(np.stack(list(heldout.values())), jnp.float32)
    scores = model.apply(model.variables, x)
    assert float(scores.max() - scores.min()) > 1.0  # not a constant model
    g = jax.grad(lambda im: model.score_one(model.variables, im))(x[0])
    assert bool(jnp.all(jnp.isfinite(g)))
    # A step of L2 norm 500 (pixel units) against the gradient lowers the score (first-order model holds).
    step = -500.0 * g / jnp.linalg.norm(g)
    lowered = model.score_one(model.variables, jnp.clip(x[0] + step, 0, 255))
    assert float(lowered) < float(scores[0]) - 1.0


def test_distortions_are_deterministic_and_graded():
    img = sources.cover_crop(sources.load_source(sources.all_sources()[0], None), (96, 128))
    a = distortions.apply(img, "noise", 10.0, np.random.default_rng(3))
    b = distortions.apply(img, "noise", 10.0, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    for family, values in distortions.TRAIN_LEVELS.items():
        if family in ("desaturate", "oversaturate", "brighten", "darken"):
            continue
        ssim = [labels.ssim_rgb(img, distortions.apply(img, family, v, np.random.default_rng(0))) for v in values]
        assert all(s1 >= s2 - 1e-3 for s1, s2 in zip(ssim, ssim[1:])), (family, ssim)
    ref = {"noise": 0.1}
    mos = labels.mos_from_strength(labels.strength(np.array([1.0, 0.9, 0.5, 0.1, 1e-4]), "noise", ref), "noise")
    assert mos[0] == labels.MOS_PRISTINE and np.all(np.diff(mos) <= 0) and mos[-1] == labels.MOS_FLOOR
    assert mos[3] == pytest.approx(labels.STRONGEST_MOS["noise"])


def test_training_step_runs_and_batches_are_reproducible():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 5, 40, 48, 3), dtype=np.uint8)
    lab = np.linspace(80, 20, 15, dtype=np.float32).reshape(3, 5)
    b1 = train_default.sample_batch(images, lab, np.random.default_rng(1), 2, 3, (32, 32))
    b2 = train_default.sample_batch(images, lab, np.random.default_rng(1), 2, 3, (32, 32))
    np.testing.assert_array_equal(b1[0], b2[0])
    assert b1[0].shape == (6, 32, 32, 3)
    assert all(y in lab[:, 0] for y in b1[1][0::3])  # each group starts with its pristine version
    import optax

    module = small.build(widths=(4, 4, 8, 8, 8), head=(8, 4))
    params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
    opt = optax.adam(1e-3)
    step = train_default.make_train_step(module, opt, 2, 3, 1.0)
    state = opt.init(params)
    new, state, loss, mse, rank = step(params, state, jnp.asarray(b1[0], jnp.float32), jnp.asarray(b1[1]))
    assert np.isfinite(float(loss)) and float(loss) == pytest.approx(float(mse) + float(rank), rel=1e-5)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params, new)
    assert all(jax.tree.leaves(changed))
