"""``qcamo attack`` as a two-process job (``jax.distributed`` on localhost, two CPU devices each).

The job must give what a single-process run of the same command gives: the same output files byte
for byte, and one ``report.json`` (written by process 0) listing every input once with the same
per-image scores and budgets. The inputs are chosen to exercise what could desynchronise the
processes: two image shapes (two compiled programs), an odd number of images, so that with
``--batch-size 2`` one batch has a single image and process 1 runs a dummy part, and a bad file
among the inputs that process 1 probes, so process 0 must learn of it to plan the same batches.
A ``--resume`` of the job after one output of process 1 was damaged must recompute that output's batch
on both processes (the decision is per batch, taken together) and reuse the rest.

``--quantize none`` keeps the compiled programs small (the DCT quantizer adds about 5 s per process);
the job's DCT outputs were checked byte-identical to a single-process run by hand as well.

The model is a tiny randomly initialised ``qcamo-small`` checkpoint, as in tests/test_cli_attack.py:
``--model tiny-random`` (a tiny KonCept512) compiles for over 40 s per run on a 2-core CPU.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import photos

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"astronaut": (64, 96), "chelsea": (64, 96), "coffee": (64, 96), "motorcycle_left": (72, 64), "rocket": (72, 64)}
BAD = "unreadable.png"  # sorted last: in process 1's part of the input list
FAST = ["--target", "66", "--steps", "2", "--search-steps", "2", "--batch-size", "2", "--quantize", "none", "--quiet",
        "--devices", "all"]
TIMEOUT = 240  # seconds per process: a hung collective fails the test instead of blocking CI


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Five photos of two shapes (3 + 2) and one file that is not an image."""
    d = tmp_path_factory.mktemp("in")
    for name, shape in SHAPES.items():
        Image.fromarray(photos.photo(name, shape)).save(d / f"{name}.png")
    (d / BAD).write_bytes(b"not an image at all")
    return d


def _env(**extra: str) -> dict[str, str]:
    # No QCAMO_ setting of the caller's leaks in, except the test run's compile cache (tests/conftest.py).
    env = {k: v for k, v in os.environ.items() if not k.startswith("QCAMO_") or k == "QCAMO_COMPILE_CACHE"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
               XLA_FLAGS=f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip())
    env.update(extra)
    return env


def _attack(args: list, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qcamo_jax", "attack", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs: list[subprocess.Popen]) -> list[tuple[int, str]]:
    """``(exit code, stderr)`` of each process; kills them all if one is still running after TIMEOUT."""
    try:
        results = []
        for p in procs:
            _, stderr = p.communicate(timeout=TIMEOUT)
            results.append((p.returncode, stderr))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


def _job(args: list, extra: tuple[list, list] = ([], [])) -> list[subprocess.Popen]:
    """``qcamo attack ARGS`` as two processes of one job (``extra[i]`` appended for process i), coordinated on
    a free localhost port."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {"QCAMO_COORDINATOR": f"localhost:{port}", "QCAMO_NUM_PROCESSES": "2"}
    return [_attack([*args, *extra[i]], _env(**env, QCAMO_PROCESS_ID=str(i))) for i in range(2)]


def _comparable(report: list[dict]) -> list[dict]:
    """Records without what legitimately differs between runs: timing and the output folder."""
    return [{**{k: v for k, v in r.items() if k != "seconds"}, "output": r["output"] and Path(r["output"]).name}
            for r in report]


def test_every_process_gets_a_part_and_pads_it_to_the_same_size():
    import numpy as np

    from qcamo_jax.multihost import ProcessGroup
    from qcamo_jax.pipeline import engine_batch

    for n in (1, 2, 3, 5, 8):
        for count in (1, 2, 3):
            groups = [ProcessGroup(i, count) for i in range(count)]
            parts = [g.part(list(range(n))) for g in groups]
            assert [x for part in parts for x in part] == list(range(n))
            assert {g.part_size(n) for g in groups} == {max(len(p) for p in parts)}
    assert ProcessGroup().gather_parts([1, 2]) == [1, 2] and ProcessGroup().broadcast("x") == "x"
    ProcessGroup().agree("anything", "one value")  # a single process always agrees with itself

    shape = (8, 8, 3)
    images = [np.full(shape, 7, np.uint8)]
    x, seeds = engine_batch(images, [5], 3, shape)
    assert x.shape == (3, *shape) and (x == 7).all() and seeds.tolist() == [5, 5, 5]
    x, seeds = engine_batch([], [], 2, shape)  # an empty part still makes the call: mid-grey dummies
    assert x.shape == (2, *shape) and (x == 128).all() and seeds.tolist() == [0, 0]


def test_two_processes_give_the_single_process_outputs_and_report(tmp_path, inputs, tiny_checkpoint):
    common = [inputs, "--model", tiny_checkpoint, *FAST]
    out = tmp_path / "multi"
    single = _attack([*common, "--out", tmp_path / "single"], _env())  # at the same time as the job
    (rc0, err0), (rc1, err1), (rc, err) = _finish([*_job([*common, "--out", out]), single])
    assert rc == 1, err[-3000:]  # 1: one input refused
    assert (rc0, rc1) == (1, 1), (err0[-3000:], err1[-3000:])  # every process returns the run's exit code

    # The bad file is refused with its name, once (by process 0, which learnt of it from process 1).
    refusal = f"qcamo: skipped {inputs / BAD}: not an image"
    assert refusal in err0 and refusal not in err1, (err0, err1)
    assert "5/6 images attacked (0 reused), 1 refused" in err0 and "images attacked" not in err1

    # One report, by process 0, listing every input once, equal to the single-process run's.
    single_report = json.loads((tmp_path / "single" / "report.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert sorted(r["path"] for r in report) == sorted(str(p) for p in inputs.iterdir())
    assert _comparable(report) == _comparable(single_report)
    assert [r["path"] for r in report if r["error"]] == [str(inputs / BAD)]
    assert len({r["budget"] for r in report if r["budget"] is not None}) > 1  # the search did something per image
    assert (out / "report.csv").read_text().count("\n") == 7 and (out / "summary.png").is_file()

    # The same output files, byte for byte, and nothing else (no temporary files left behind).
    outputs = sorted(p.name for p in out.iterdir())
    assert outputs == sorted(p.name for p in (tmp_path / "single").iterdir())
    for r in report:
        if r["output"]:
            name = Path(r["output"]).name
            assert (out / name).read_bytes() == (tmp_path / "single" / name).read_bytes(), name

    # --resume after damaging rocket's output: its batch (motorcycle_left on process 0, rocket on
    # process 1) is recomputed by both, the two batches of the other shape are reused.
    (out / "rocket.png").write_bytes(b"damaged")
    (rc0, err0), (rc1, err1) = _finish(_job([*common, "--out", out, "--resume"]))
    assert (rc0, rc1) == (1, 1), (err0[-3000:], err1[-3000:])
    assert "5/6 images attacked (3 reused), 1 refused" in err0, err0
    assert _comparable(json.loads((out / "report.json").read_text())) == _comparable(single_report)
    assert (out / "rocket.png").read_bytes() == (tmp_path / "single" / "rocket.png").read_bytes()



def test_processes_given_different_settings_fail_alike_instead_of_hanging(tmp_path, inputs, tiny_checkpoint):
    """A job whose processes would plan different batches stops before its first attack call, on every process."""
    args = [inputs, "--model", tiny_checkpoint, *FAST, "--out", tmp_path / "out"]
    results = _finish(_job(args, extra=(["--seed", "1"], ["--seed", "2"])))
    for rc, stderr in results:
        assert rc == 2, stderr[-3000:]
        assert stderr.startswith("qcamo: error: the processes of this multi-host job disagree on the inputs and settings")
        assert len(stderr.strip().splitlines()) == 1



def test_distributed_auto_outside_a_cluster_is_a_one_line_error(tmp_path, inputs):
    env = {k: v for k, v in _env().items() if not k.startswith(("SLURM_", "OMPI_", "PMI_"))}  # no cluster to find
    proc = subprocess.run([sys.executable, "-m", "qcamo_jax", "attack", str(inputs), "--out", str(tmp_path / "out"),
                           "--model", "tiny-random", "--distributed", "auto"], env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qcamo: error: cannot join the multi-host job: "), lines
