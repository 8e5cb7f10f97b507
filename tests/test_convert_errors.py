"""Bad weight files: one-line WeightFileError naming the file, CLI exit 2, no traceback, no output file."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from qcamo_jax import cli
from qcamo_jax.errors import WeightFileError
from qcamo_jax.models import convert


def _small_h5(path):
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"dense"])
        g = f.create_group("dense")
        g.attrs["weight_names"] = np.array([b"dense/kernel:0", b"dense/bias:0"])
        g.create_dataset("dense/kernel:0", data=np.ones((300, 400), np.float32))
        g.create_dataset("dense/bias:0", data=np.ones(400, np.float32))


def _cases(tmp_path):
    rng = np.random.default_rng(0)
    cases = {}
    cases["random.h5"] = rng.bytes(5000)
    cases["random.pth"] = rng.bytes(5000)
    cases["empty.h5"] = b""
    _small_h5(tmp_path / "src.h5")
    full = (tmp_path / "src.h5").read_bytes()
    cases["truncated.h5"] = full[: len(full) // 2]
    cases["hdf5_magic.h5"] = full[:8] + rng.bytes(4000)
    cases["unrelated.h5"] = full
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f.create_dataset("x", data=np.arange(10))
    cases["not_keras.h5"] = (tmp_path / "plain.h5").read_bytes()
    torch = pytest.importorskip("torch")
    torch.save({"fc.0.weight": torch.ones(2048, 1536)}, tmp_path / "src.pth")
    pth = (tmp_path / "src.pth").read_bytes()
    cases["truncated.pth"] = pth[: len(pth) // 2]
    cases["text.pth"] = b"hello world, not a model"
    return cases


EXPECTED = {
    "random.h5": "not a Keras .h5 or PyTorch .pth|not an HDF5 file",
    "random.pth": "not a PyTorch file|not a readable PyTorch state_dict",
    "empty.h5": "empty file",
    "truncated.h5": "not a readable HDF5 file|corrupt or truncated",
    "hdf5_magic.h5": "not a readable HDF5 file|corrupt or truncated",
    "unrelated.h5": "has 1 layers with weights; the Keras KonCept512 has 455",
    "not_keras.h5": "without a Keras 'layer_names' attribute",
    "truncated.pth": "not a readable PyTorch state_dict",
    "text.pth": "not a PyTorch file",
}


def test_bad_files_raise_one_line_errors(tmp_path):
    for name, data in _cases(tmp_path).items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(WeightFileError) as info:
            convert.convert_file(path, tmp_path / "out.safetensors")
        msg = str(info.value)
        assert "\n" not in msg and msg.startswith(str(path)), msg
        assert any(m in msg for m in EXPECTED[name].split("|")), (name, msg)
        assert not (tmp_path / "out.safetensors").exists()


def test_cli_convert_exit_2_without_traceback(tmp_path, capsys):
    bad = tmp_path / "KonCept512.pth"
    bad.write_bytes(b"\x80\x02garbage" * 10)
    assert cli.main(["convert", str(bad), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"qcamo: error: {bad}: ") and err.count("\n") == 1 and "Traceback" not in err
    assert cli.main(["convert", str(tmp_path / "missing.h5"), str(tmp_path / "o.safetensors")]) == 2
    assert "missing.h5': no such file" in capsys.readouterr().err


def test_keras3_native_weights_layout_is_refused_with_a_hint(tmp_path):
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    with pytest.raises(WeightFileError, match=r"model\.weights\.h5: Keras 3 native \.weights\.h5 layout"):
        convert.convert_file(path, tmp_path / "out.safetensors")
