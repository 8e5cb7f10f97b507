"""PyTorch .pth (MediaEval 2020 port) -> qcamo conversion: parity with PyTorch on real photos.

The reference is Cadene's InceptionResNetV2 + the MediaEval head with the ``children()[:-1]``
``AvgPool2d(8, count_include_pad=False)`` quirk, random weights, batch norms calibrated on real photos.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import photos as P
from qcamo_jax.errors import WeightFileError
from qcamo_jax.models import convert, convert_torch, hub

torch = pytest.importorskip("torch")
from qcamo_jax.testing import torch_koncept as tk  # noqa: E402

NAMES = ("astronaut", "chelsea", "coffee", "rocket")
FULL = (384, 512)
#: Smaller size the MediaEval model still accepts: final map 8x11, the 8x8 window covers all its rows.
SMALL = (320, 400)
SCORE_TOL = 0.01
GRAD_COS = 0.999


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("torch")
    torch.manual_seed(0)
    model = tk.build_torch_koncept()
    tk.calibrate(model, P.photos(SMALL, NAMES))
    path = d / "KonCept512.pth"
    torch.save(model.state_dict(), path)
    refs = {}
    for size, n in ((FULL, 3), (SMALL, 4)):
        x = P.photos(size, NAMES[:n])
        refs[size] = (x, *tk.scores_and_grads(model, x))
    n_params = sum(t.numel() for k, t in model.state_dict().items() if not k.endswith("num_batches_tracked"))
    return {"path": path, "refs": refs, "dir": d, "n_params": n_params, "model": model}


@pytest.fixture(scope="module")
def converted(torch_files):
    dst = torch_files["dir"] / "koncept.safetensors"
    report = convert.convert_file(torch_files["path"], dst)
    return report, hub.load_model(dst)


@pytest.fixture(scope="module")
def standard(converted, torch_files):
    """The converted file loaded in the standard form (batch norms apart), as the checkpoint holds it."""
    return hub.load_model(torch_files["dir"] / "koncept.safetensors", inference=False)


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


def test_counts_and_metadata(torch_files, converted):
    report, model = converted
    assert report.variant == "mediaeval" and model.metadata["config"] == '{"size": "full", "variant": "mediaeval"}'
    assert report.n_params == torch_files["n_params"]  # every tensor but num_batches_tracked lands somewhere
    assert model.metadata["source_file"] == "KonCept512.pth"


@pytest.mark.slow
def test_parity_full_size(torch_files, converted):
    """At 384x512 the map is 10x14 and only its top-left 8x8 window is pooled, as in PyTorch."""
    _check_parity(converted[1], torch_files["refs"][FULL])


def test_parity_smaller_size(torch_files, converted):
    """``load_model`` gives the inference form (batch norms folded); it matches PyTorch like the standard form."""
    assert converted[1].metadata["form"] == "inference"
    _check_parity(converted[1], torch_files["refs"][SMALL])


def test_parity_smaller_size_standard_form(torch_files, standard):
    assert "form" not in standard.metadata and "backbone" in standard.variables["batch_stats"]
    _check_parity(standard, torch_files["refs"][SMALL])


def test_pooling_quirk_matters(torch_files, standard):
    """The pooled features equal PyTorch's ``base`` output (AvgPool2d(8) kept), and differ from a global average."""
    from qcamo_jax.models import koncept

    from qcamo_jax.models.inception_resnet_v2 import InceptionResNetV2

    model = standard
    x = jnp.asarray(torch_files["refs"][FULL][0][:1], jnp.float32)

    backbone = InceptionResNetV2(model.module.backbone, bn_scale=True)
    v = {"params": model.variables["params"]["backbone"], "batch_stats": model.variables["batch_stats"]["backbone"]}
    fmap = jax.jit(backbone.apply)(v, x / 127.5 - 1.0)
    assert fmap.shape == (1, 10, 14, 1536)
    window = koncept.pool(fmap, "mediaeval", 8)
    assert not np.allclose(window, koncept.pool(fmap, "keras"), atol=1e-3)
    with torch.no_grad():
        ref = torch_files["model"].base(tk.to_input(np.asarray(x)))
    np.testing.assert_allclose(np.asarray(window)[0], ref.reshape(-1).numpy(), atol=1e-3)


def test_state_dict_key_mapping_is_total():
    model = tk.build_torch_koncept()
    mapped = [convert_torch.map_key(k) for k in model.state_dict()]
    assert sum(m is None for m in mapped) == sum(k.endswith("num_batches_tracked") for k in model.state_dict())
    assert convert_torch.map_key("module.base.8.3.branch2.1.bn.running_var") == (
        "batch_stats", "backbone/block35_4/branch2_1/bn", "var")
    assert convert_torch.map_key("base.7.branch3.1.conv.weight") == ("params", "backbone/mixed_5b/branch3/conv", "conv")
    assert convert_torch.map_key("fc.12.weight") == ("params", "dense_out", "linear")
    with pytest.raises(KeyError):
        convert_torch.map_key("base.7.branch3.0.conv.weight")


def test_head_only_and_unrelated_state_dicts_are_refused(torch_files, tmp_path):
    sd = torch.load(torch_files["path"], weights_only=True)
    head = tmp_path / "head.pth"
    torch.save({k: v for k, v in sd.items() if k.startswith("fc.")}, head)
    with pytest.raises(WeightFileError, match=r"head\.pth: weights do not fit the architecture: \d+ missing"):
        convert.convert_file(head, tmp_path / "o.safetensors")
    other = tmp_path / "resnet.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), other)
    with pytest.raises(WeightFileError, match=r"resnet\.pth: 2 keys are not part of the MediaEval KonCept512"):
        convert.convert_file(other, tmp_path / "o.safetensors")
    pickled = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(3, 2), pickled)  # a whole pickled module: refused by weights_only=True
    with pytest.raises(WeightFileError, match=r"module\.pth: not a readable PyTorch state_dict"):
        convert.convert_file(pickled, tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()


def test_cli_convert_then_score_json(torch_files, tmp_path, capsys):
    """``qcamo convert`` then ``qcamo score --json`` on PNGs reproduces the original framework's scores."""
    from PIL import Image

    from qcamo_jax import cli

    dst = tmp_path / "cli.safetensors"
    assert cli.main(["convert", str(torch_files["path"]), str(dst)]) == 0
    out = capsys.readouterr().out
    assert "variant: mediaeval" in out and "parameters: " in out and "sha256: " in out
    x, s_ref, _ = torch_files["refs"][SMALL]
    pngs = []
    for i, im in enumerate(x):
        pngs.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(im).save(pngs[-1])
    assert cli.main(["score", "--model", str(dst), "--json", *pngs]) == 0
    got = [o["score"] for o in json.loads(capsys.readouterr().out)]
    np.testing.assert_allclose(got, s_ref, atol=SCORE_TOL, rtol=0)
