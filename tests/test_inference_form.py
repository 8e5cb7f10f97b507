"""KonCept512's inference form (batch norms folded, parallel 1x1 convolutions merged) computes the same model.

Parity with the real frameworks is in test_convert_torch.py / test_convert_keras.py (``load_model``
gives this form); here the two forms are compared with each other on tiny models whose batch norms
have non-trivial statistics and gammas, so that a wrong fold or a wrong merge order cannot hide.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import photos
from qcamo_jax.models import checkpoint, hub, inference_form
from qcamo_jax.models.inception_resnet_v2 import BN_EPSILON, FAN_OUT, FAN_OUTS


def _perturbed(model, seed):
    """``model`` with every batch norm given random gammas, betas, means and variances (a real model's are not 0/1)."""
    rng = np.random.default_rng(seed)

    def walk(tree, kind):
        out = {}
        for k, v in tree.items():
            if isinstance(v, Mapping):
                out[k] = walk(v, kind)
            elif kind == "batch_stats":
                out[k] = (rng.uniform(0.3, 3.0, v.shape) if k == "var" else rng.normal(0, 0.5, v.shape)).astype(np.float32)
            elif k in ("scale", "bias") and v.ndim == 1:
                out[k] = (rng.uniform(0.5, 1.5, v.shape) if k == "scale" else rng.normal(0, 0.3, v.shape)).astype(np.float32)
            else:
                out[k] = np.asarray(v)
        return out

    variables = {kind: walk(model.variables[kind], kind) for kind in ("params", "batch_stats")}
    return dataclasses.replace(model, variables=jax.tree.map(jnp.asarray, variables))


def _tiny(variant):
    """Tiny KonCept512 of either variant (mediaeval: batch norms with gamma), perturbed, and its input size."""
    model = hub.init_random("koncept512", {"variant": variant, "size": "tiny"})
    return _perturbed(model, 0 if variant == "keras" else 1), model.input_size


def test_same_scores_and_gradients_as_the_standard_form():
    """MediaEval variant: its batch norms have gammas (the Keras variant's fold is the same with gamma 1)."""
    model, size = _tiny("mediaeval")
    fused = hub.inference_form(model)
    assert fused.metadata["form"] == "inference" and fused.module.fused and not model.module.fused
    x = jnp.asarray(photos.photos(size, names=("astronaut", "chelsea", "coffee")), jnp.float32)

    def scores_grads(m):
        f = jax.jit(jax.vmap(jax.value_and_grad(m.score_one, argnums=1), in_axes=(None, 0)))
        return [np.asarray(a) for a in f(m.variables, x)]

    (s, g), (sf, gf) = scores_grads(model), scores_grads(fused)
    assert np.ptp(s) > 1e-4, s  # the scores differ between photos
    np.testing.assert_allclose(sf, s, rtol=1e-5, atol=1e-5 * np.abs(s).max())
    rel = np.linalg.norm((gf - g).reshape(3, -1), axis=1) / np.linalg.norm(g.reshape(3, -1), axis=1)
    assert rel.max() < 1e-4, rel


@pytest.mark.parametrize("variant", ["keras", "mediaeval"])
def test_variables_match_the_fused_module_exactly(variant):
    model, size = _tiny(variant)
    fused = hub.inference_form(model)
    template = jax.eval_shape(fused.module.init, jax.random.PRNGKey(0), jnp.zeros((1, *size, 3), jnp.float32))
    checkpoint.check_against_template(jax.tree.map(np.asarray, fused.variables), template, "<fused>")
    assert set(checkpoint.flatten(fused.variables)) == set(checkpoint.flatten_shapes(template))
    assert "backbone" not in fused.variables["batch_stats"]  # only the head's batch norms are left
    backbone = fused.variables["params"]["backbone"]
    merged = [name for name in backbone if FAN_OUT in backbone[name]]
    assert sorted(merged) == ["block17_1", "block35_1", "block8_1", "block8_2", "mixed_5b", "mixed_7a"]
    for name in merged:  # the listed first convolutions are gone, their kernels concatenated in order
        kind = name if name in FAN_OUTS else name.split("_")[0]
        assert not set(FAN_OUTS[kind]) & set(backbone[name])


def test_fold_batch_norm_is_the_batch_norm_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    bn = {"scale": rng.uniform(0.5, 2, 4), "bias": rng.normal(size=4)}
    stats = {"mean": rng.normal(size=4), "var": rng.uniform(0.1, 3, 4)}
    conv = lambda k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))  # noqa: E731
    expected = (np.asarray(conv(kernel)) - stats["mean"]) / np.sqrt(stats["var"] + BN_EPSILON) * bn["scale"] + bn["bias"]
    k, b = inference_form.fold_batch_norm(kernel, bn, stats)
    assert k.dtype == np.float32 and b.dtype == np.float32 and k.shape == kernel.shape and b.shape == (4,)
    np.testing.assert_allclose(np.asarray(conv(k)) + b, expected, rtol=1e-5, atol=1e-5)
    # Without a gamma (Keras' scale=False) the scale is 1.
    k1, b1 = inference_form.fold_batch_norm(kernel, {"bias": bn["bias"]}, stats)
    np.testing.assert_allclose(k1 * bn["scale"], k, rtol=1e-6)


def test_forms_that_do_not_apply_come_back_unchanged():
    from tiny_model import tiny_model

    small = tiny_model()  # qcamo-small has no batch norms and no inference form
    assert hub.inference_form(small) is small
    fused = hub.load_model("tiny-random")
    assert hub.inference_form(fused) is fused
    standard = hub.load_model("tiny-random", inference=False)
    assert "form" not in standard.metadata and not standard.module.fused


def test_a_tree_that_is_not_a_standard_koncept512_is_refused():
    fused = hub.load_model("tiny-random")
    with pytest.raises(ValueError, match="not a standard-form KonCept512"):
        inference_form.fuse_koncept512(fused.variables)  # already fused: no backbone batch statistics
    standard = hub.load_model("tiny-random", inference=False)
    params = jax.tree.map(np.asarray, dict(standard.variables["params"]))
    params["backbone"] = dict(params["backbone"])
    params["backbone"]["block35_1"] = {k: v for k, v in params["backbone"]["block35_1"].items() if k != "branch1_0"}
    with pytest.raises(ValueError, match="block35_1: no convolution named branch1_0"):
        inference_form.fuse_koncept512({"params": params, "batch_stats": standard.variables["batch_stats"]})


def test_the_inference_form_is_not_saved_and_a_saved_form_label_is_ignored(tmp_path):
    fused = hub.load_model("tiny-random")
    with pytest.raises(ValueError, match="inference form.*inference=False"):
        checkpoint.save(tmp_path / "fused.safetensors", fused.variables, fused.metadata)
    assert not (tmp_path / "fused.safetensors").exists()
    # Standard variables in a file whose metadata still says "inference" (written without checkpoint.save):
    # loading ignores the label and folds them.
    from safetensors.numpy import save_file

    standard = hub.load_model("tiny-random", inference=False)
    path = tmp_path / "standard.safetensors"
    flat = {k: np.asarray(v) for k, v in checkpoint.flatten(standard.variables).items()}
    save_file(flat, path, metadata={**fused.metadata, "format_version": "1"})
    loaded = hub.load_model(path)
    assert loaded.module.fused and loaded.metadata["form"] == "inference"
    assert "form" not in hub.load_model(path, inference=False).metadata
