"""The persistent compilation cache of the ``qcamo`` commands (qcamo_jax/compile_cache.py).

Where it goes and who decides (the rules are pure functions of the environment), and that it changes
nothing but the time: a second ``qcamo attack`` process loads the attack program an earlier one
compiled and writes byte-identical outputs, also when the program carries the progress callbacks
(which JAX never caches).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import photos
from qcamo_jax import compile_cache

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("environ, jax_dir, jax_enabled, want", [
    ({"HOME": "/home/u"}, None, True, ("/home/u/.cache/qcamo_jax/xla", True)),
    ({"HOME": "/home/u", "XDG_CACHE_HOME": "/var/c"}, None, True, ("/var/c/qcamo_jax/xla", True)),
    ({"HOME": "/home/u", "XDG_CACHE_HOME": "relative"}, None, True, ("/home/u/.cache/qcamo_jax/xla", True)),  # XDG: ignored
    ({"HOME": "/home/u", "QCAMO_COMPILE_CACHE": "/data/xla"}, None, True, ("/data/xla", True)),
    ({"HOME": "/home/u", "QCAMO_COMPILE_CACHE": "off"}, None, True, (None, False)),
    ({"HOME": "/home/u", "QCAMO_COMPILE_CACHE": "0"}, "/jax/own", True, (None, False)),
    ({"HOME": "/home/u", "QCAMO_COMPILE_CACHE": "/data/xla"}, "/jax/own", True, ("/jax/own", False)),  # JAX's wins
    ({"HOME": "/home/u"}, None, False, (None, False)),  # JAX_ENABLE_COMPILATION_CACHE=false
])
def test_where_the_cache_goes(environ, jax_dir, jax_enabled, want):
    directory, ours = compile_cache.choose(environ, jax_dir, jax_enabled)
    assert (None if directory is None else str(directory), ours) == want


def test_an_unusable_directory_leaves_the_cache_off(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert not compile_cache._usable(blocker / "xla")  # under a file: cannot be created
    assert compile_cache._usable(tmp_path / "a" / "b") and (tmp_path / "a" / "b").is_dir()


def _attack(folder: Path, out: Path, cache: Path, tiny_checkpoint, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT), "QCAMO_COMPILE_CACHE": str(cache)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    proc = subprocess.run([sys.executable, "-m", "qcamo_jax", "attack", str(folder), "--out", str(out), "--model",
                           str(tiny_checkpoint), "--target", "45", "--steps", "2", "--search-steps", "2",
                           # No quantizer: the smallest attack program (3 compiles of it make this test's time).
                           "--quantize", "none", "--survive", "none", *extra], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    return proc


def test_a_second_run_loads_the_program_and_writes_the_same_files(tmp_path, tiny_checkpoint):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(photos.photo("chelsea", (64, 96))).save(folder / "cat.png")
    cache = tmp_path / "cache"
    # stderr is a pipe: no bar, so no unit callbacks in the program, and JAX can store it.
    first = _attack(folder, tmp_path / "a", cache, tiny_checkpoint)
    assert "qcamo: compiled in" in first.stderr and "from the compile cache" not in first.stderr
    assert any(cache.iterdir())
    second = _attack(folder, tmp_path / "b", cache, tiny_checkpoint)
    assert "(from the compile cache of an earlier run)" in second.stderr, second.stderr
    # --log-json shows units inside the batch: the program then has the callbacks, compiles again (JAX
    # does not store such a program), and its numbers are the same.
    log = tmp_path / "events.jsonl"
    _attack(folder, tmp_path / "c", cache, tiny_checkpoint, "--log-json", str(log))
    events = [json.loads(line) for line in log.read_text().splitlines()]
    compiled = [e for e in events if e["event"] == "compile_end"]
    assert len(compiled) == 1 and compiled[0]["cache_misses"] >= 1
    assert any(e["event"] == "progress" and 0 < e["batch_fraction"] < 1 for e in events)
    outputs = [(tmp_path / run / "cat.png").read_bytes() for run in ("a", "b", "c")]
    assert outputs[0] == outputs[1] == outputs[2]
