"""Keras .h5 -> qcamo conversion: parity with Keras 3 on real photos, both h5 layouts, both naming styles.

One random-weight Keras KonCept512 (batch norms calibrated on real photos, scores spread over several
points) is built per module and written by Keras' own legacy HDF5 writer, as a full model
(``model.save("x.h5")``) and weights only. The Keras 2 naming style (1-indexed ``conv2d_1``), chunked
``layer_names0..`` attributes, str instead of bytes attributes, and scrambled names are produced by
rewriting the file's groups and attributes, then each file must convert to the very same tree.
"""

from __future__ import annotations

import json

import re

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import photos as P
from qcamo_jax.errors import WeightFileError
from qcamo_jax.models import checkpoint, convert, convert_keras, hub

keras = pytest.importorskip("keras")
from qcamo_jax.testing import keras_koncept as kk  # noqa: E402

NAMES = ("astronaut", "chelsea", "coffee", "rocket")
FULL = (384, 512)
SMALL = (256, 320)
SCORE_TOL = 0.01
GRAD_COS = 0.999


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """Calibrated Keras model -> (full-model .h5, weights-only .h5, reference outputs at two sizes)."""
    d = tmp_path_factory.mktemp("keras")
    model = kk.build_keras_koncept()
    kk.calibrate(model, P.photos(SMALL, NAMES))
    full, weights = d / "koncept_full.h5", d / "koncept_weights.h5"
    kk.save_h5_full(model, full)
    kk.save_h5_weights(model, weights)
    refs = {}
    for size, n in ((FULL, 3), (SMALL, 4)):
        x = P.photos(size, NAMES[:n])
        refs[size] = (x, *kk.scores_and_grads(model, x))
    kinds = [type(l).__name__ for l in model.layers if l.weights]
    return {"full": full, "weights": weights, "refs": refs, "kinds": kinds, "dir": d,
            "n_params": model.count_params()}


@pytest.fixture(scope="module")
def converted(keras_files):
    dst = keras_files["dir"] / "koncept.safetensors"
    report = convert.convert_file(keras_files["full"], dst)
    return report, hub.load_model(dst)


def test_layer_and_parameter_counts(keras_files, converted):
    report, model = converted
    assert len(keras_files["kinds"]) == convert_keras.N_WEIGHTED_LAYERS == 455
    assert keras_files["n_params"] == report.n_params == 59_858_657
    assert report.variant == "keras"
    assert model.metadata["source_file"] == "koncept_full.h5"
    assert len(model.metadata["source_sha256"]) == 64


def test_layer_order_matches_keras(keras_files):
    """The order computed without Keras (map_graph re-implemented) has Keras' layer types position by position."""
    expected = {"conv": "Conv2D", "conv_bias": "Conv2D", "bn": "BatchNormalization", "bn_head": "BatchNormalization",
                "dense": "Dense"}
    ours = [expected[k] for k, _ in convert_keras.weighted_layer_order()]
    assert ours == keras_files["kinds"]
    # and it is not simply creation order: Keras puts the deepest branch of mixed_5b first.
    assert convert_keras.weighted_layer_order()[10][1] == "backbone/mixed_5b/branch2_0/conv"


def _cosines(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _check_parity(model, ref):
    x, s_ref, g_ref = ref
    f = jax.jit(jax.vmap(jax.value_and_grad(model.score_one, argnums=1), in_axes=(None, 0)))
    s, g = f(model.variables, jnp.asarray(x, jnp.float32))
    s, g = np.asarray(s), np.asarray(g)
    assert np.ptp(s_ref) >= 5.0, f"reference scores do not spread: {s_ref}"
    np.testing.assert_allclose(s, s_ref, atol=SCORE_TOL, rtol=0)
    assert _cosines(g, g_ref).min() >= GRAD_COS, _cosines(g, g_ref)


@pytest.mark.slow
def test_parity_full_size(keras_files, converted):
    _check_parity(converted[1], keras_files["refs"][FULL])


def test_parity_smaller_size(keras_files, converted):
    """The Keras model is fully convolutional with a global pool: any size gives the original's score.

    ``load_model`` gives the inference form (batch norms folded); the standard form matches too."""
    assert converted[1].metadata["form"] == "inference"
    _check_parity(converted[1], keras_files["refs"][SMALL])
    _check_parity(hub.load_model(keras_files["dir"] / "koncept.safetensors", inference=False), keras_files["refs"][SMALL])


# ---------------------------------------------------------------------------------------------------
# Layouts and naming styles: all must give exactly the same tree.


def _keras2_name(name: str) -> str:
    """tf.keras / Keras 3 auto name (0-indexed: conv2d, conv2d_1) -> standalone Keras 2 (conv2d_1, conv2d_2)."""
    m = re.fullmatch(r"(conv2d|batch_normalization|dense|activation|max_pooling2d|average_pooling2d|concatenate|"
                     r"global_average_pooling2d|dropout|input_layer)(?:_(\d+))?", name)
    if not m:
        return name
    return f"{m.group(1)}_{int(m.group(2) or 0) + 1}"


def _rewrite(src, dst, rename, chunks: int = 1, as_str: bool = False, weight_suffix: str = ""):
    """Copy a legacy Keras h5 renaming layers, chunking layer_names and choosing bytes / str attributes."""
    with h5py.File(src, "r") as fin, h5py.File(dst, "w") as fout:
        root_in = fin["model_weights"] if "model_weights" in fin else fin
        root_out = fout.create_group("model_weights") if "model_weights" in fin else fout
        for k, v in root_in.attrs.items():
            if not k.startswith("layer_names"):
                root_out.attrs[k] = v
        names = [n.decode() if isinstance(n, bytes) else n for n in root_in.attrs["layer_names"]]
        new_names = [rename(n) for n in names]
        if as_str:
            enc = lambda xs: np.array(xs, dtype=h5py.string_dtype())  # noqa: E731
        else:
            enc = lambda xs: np.array([x.encode() for x in xs])  # noqa: E731
        for i, part in enumerate(np.array_split(np.array(new_names, dtype=object), chunks)):
            root_out.attrs[f"layer_names{i}" if chunks > 1 else "layer_names"] = enc(list(part))
        for old, new in zip(names, new_names):
            g_in, g_out = root_in[old], root_out.create_group(new)
            wnames = [w.decode() if isinstance(w, bytes) else w for w in g_in.attrs["weight_names"]]
            new_w = [f"{new}/{w.split('/')[-1]}{weight_suffix}" for w in wnames]
            g_out.attrs["weight_names"] = enc(new_w)
            for w, nw in zip(wnames, new_w):
                g_out.create_dataset(nw, data=g_in[w][()])


def _flat(variables):
    return checkpoint.flatten(variables)


@pytest.fixture(scope="module")
def reference_tree(keras_files):
    return _flat(convert.convert_variables(keras_files["full"])[1])


def _assert_same_tree(path, reference):
    variant, tree = convert.convert_variables(path)
    assert variant == "keras"
    flat = _flat(tree)
    assert flat.keys() == reference.keys()
    for k in reference:
        np.testing.assert_array_equal(flat[k], reference[k], err_msg=k)


def test_weights_only_layout(keras_files, reference_tree):
    with h5py.File(keras_files["weights"], "r") as f:
        assert "model_weights" not in f and "layer_names" in f.attrs
    _assert_same_tree(keras_files["weights"], reference_tree)


def test_keras2_names_chunked_str_attrs(keras_files, reference_tree, tmp_path):
    """Standalone Keras 2 style: 1-indexed names, ':0' weight suffixes, layer_names in 3 chunks, str attrs."""
    dst = tmp_path / "keras2.h5"
    _rewrite(keras_files["weights"], dst, _keras2_name, chunks=3, as_str=True, weight_suffix=":0")
    with h5py.File(dst, "r") as f:
        assert "conv2d_1" in f and "conv2d" not in f and "layer_names0" in f.attrs and "layer_names" not in f.attrs
    _assert_same_tree(dst, reference_tree)


def test_full_model_layout_keras2_names_bytes(keras_files, reference_tree, tmp_path):
    dst = tmp_path / "keras2_full.h5"
    _rewrite(keras_files["full"], dst, _keras2_name, chunks=2)
    _assert_same_tree(dst, reference_tree)


def test_names_are_not_used_for_placement(keras_files, reference_tree, tmp_path):
    """Scrambled layer names (a permutation of the real ones) change nothing: placement is by position."""
    with h5py.File(keras_files["weights"], "r") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
    perm = dict(zip(names, np.random.default_rng(0).permutation(names)))
    dst = tmp_path / "scrambled.h5"
    _rewrite(keras_files["weights"], dst, lambda n: perm[n])
    _assert_same_tree(dst, reference_tree)


def test_swapped_layers_are_refused(keras_files, tmp_path):
    """Two weighted layers of different shapes swapped in layer_names: a one-line error naming the position."""
    dst = tmp_path / "swapped.h5"
    _rewrite(keras_files["weights"], dst, lambda n: n)
    with h5py.File(dst, "r+") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
        i, j = names.index("conv2d"), names.index("conv2d_1")
        names[i], names[j] = names[j], names[i]
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
    with pytest.raises(WeightFileError, match=r"layer #0 .*weight shapes"):
        convert.convert_variables(dst)


def test_head_only_file_is_refused(tmp_path):
    x = inp = keras.Input((1536,))
    for units, _ in kk.HEAD:
        x = keras.layers.BatchNormalization()(keras.layers.Dense(units, activation="relu")(x))
    head = keras.Model(inp, keras.layers.Dense(1)(x))
    path = tmp_path / "head.h5"
    kk.save_h5_weights(head, path)
    with pytest.raises(WeightFileError, match=r"head\.h5: has 7 layers with weights; the Keras KonCept512 has 455"):
        convert.convert_file(path, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_cli_convert_then_score_json(keras_files, tmp_path, capsys):
    """``qcamo convert`` then ``qcamo score --json`` on PNGs reproduces the original framework's scores."""
    from PIL import Image

    from qcamo_jax import cli

    dst = tmp_path / "cli.safetensors"
    assert cli.main(["convert", str(keras_files["full"]), str(dst)]) == 0
    out = capsys.readouterr().out
    assert "variant: keras" in out and "parameters: " in out and "sha256: " in out
    x, s_ref, _ = keras_files["refs"][SMALL]
    pngs = []
    for i, im in enumerate(x):
        pngs.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(im).save(pngs[-1])
    assert cli.main(["score", "--model", str(dst), "--json", *pngs]) == 0
    got = [o["score"] for o in json.loads(capsys.readouterr().out)]
    np.testing.assert_allclose(got, s_ref, atol=SCORE_TOL, rtol=0)
