"""The measuring helpers of benchmarks/run.py: the deadline budget and the FLOP count."""

import os
import re
import sys
import time

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import run as bench  # noqa: E402  (benchmarks/run.py)


def test_budget_without_deadline_allows_everything():
    budget = bench.Budget(None)
    assert budget.allows(1e9)
    assert budget.left() == float("inf")


def test_budget_refuses_work_that_would_end_after_the_deadline():
    budget = bench.Budget(10.0, first_compile_guess_s=4.0)
    assert budget.allows(budget.estimate(images=8, runs=2))  # 4 s compile + 16 x 0.05 s
    assert not budget.allows(budget.estimate(images=8, runs=2, compiles=3))  # 12 s
    time.sleep(0.05)
    assert budget.left() < 10.0


def test_budget_estimates_from_the_nearest_measured_batch():
    budget = bench.Budget(100.0, first_compile_guess_s=1.0)
    budget.observe(compile_s=2.0, images=1, run_s=0.5)  # 0.5 s per image at batch 1
    budget.observe(compile_s=2.0, images=64, run_s=3.2)  # 0.05 s per image at batch 64
    assert budget.estimate(images=640, runs=1, compiles=0, batch=60) == pytest.approx(32.0)
    assert budget.estimate(images=2, runs=1, compiles=0, batch=2) == pytest.approx(1.0)
    assert budget.estimate(images=0, runs=1, compiles=1) == pytest.approx(2.0)


def test_hlo_flops_counts_a_matmul_exactly():
    f = jax.jit(lambda a, b: a @ b)
    a, b = jnp.ones((16, 32)), jnp.ones((32, 8))
    assert bench.hlo_flops(f.trace(a, b)) == 2 * 16 * 32 * 8


def test_hlo_flops_counts_convolutions_as_the_compiled_cpu_program_does():
    x = jnp.ones((2, 16, 16, 3))
    w = jnp.ones((3, 3, 3, 8))
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "VALID",
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC")).sum())
    flops = bench.hlo_flops(conv.trace(x, w))
    compiled = bench.xla_flops(conv.lower(x, w).compile())
    multiply_adds = 2 * 14 * 14 * 8 * 27  # batch x output pixels x output channels x 3x3x3 taps
    assert flops == pytest.approx(2 * multiply_adds, rel=0.05)  # plus the final sum
    assert flops == pytest.approx(compiled, rel=0.05)


def test_run_py_measures_with_the_package_process_defaults():
    """benchmarks/run.py must set the package's XLA:CPU defaults before its first JAX call (a backend reads
    XLA_FLAGS once); it once started JAX first and so measured jaxlib's own kernel choices. Its report
    names the XLA flags and the malloc settings (qcamo_jax/host_malloc.py) in force."""
    import json
    import subprocess

    from qcamo_jax import host_malloc, xla_flags

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    for name in ("XLA_FLAGS", "QCAMO_XLA_DEFAULTS", "QCAMO_MALLOC_DEFAULTS", "GLIBC_TUNABLES", "LD_PRELOAD",
                 *host_malloc.USER_MALLOC_VARIABLES):
        env.pop(name, None)
    script = ("import json, os, sys; sys.path.insert(0, 'benchmarks'); import run; "
              "info = run.device_info(); print(json.dumps([info['xla_flags'], info['malloc']]))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    flags, malloc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert malloc == {name: value for name, _, value in host_malloc.malloc_defaults(env)}
    expected = xla_flags.cpu_defaults({"JAX_PLATFORMS": "cpu"})
    if not expected:
        pytest.skip("the installed jaxlib gets no default flags")
    assert flags.split() == expected


def test_alternating_times_interleaves_the_sides_and_reverses_every_other_round():
    """JAX and PyTorch are timed call by call, not one block each: on a machine whose speed drifts, a
    block measured in a slow minute set a whole side's figure (benchmarks/RESULTS.md, 2026-12-06)."""
    from sections.measure import alternating_times, per_round_ratios

    calls = []

    def side(name, seconds):
        def call():
            calls.append(name)
            time.sleep(seconds)
            return name
        return call

    timed = alternating_times({"jax": side("jax", 0.002), "torch": side("torch", 0.004)}, repeats=4, warmup=2)
    assert calls == ["jax", "torch", "torch", "jax",  # two warm-up rounds, alternating too
                     "jax", "torch", "torch", "jax", "jax", "torch", "torch", "jax"]
    jax_side, torch_side = timed["jax"], timed["torch"]
    assert len(jax_side.runs_s) == len(torch_side.runs_s) == len(jax_side.minflt) == 4
    assert (jax_side.last, torch_side.last) == ("jax", "torch")
    assert 0.002 <= jax_side.median_s < torch_side.median_s
    assert per_round_ratios([1.0, 3.0], [2.0, 2.0]) == [0.5, 1.5]


@pytest.mark.parametrize("kernel, padding", [((3, 3), ((1, 1), (1, 1))), ((3, 3), ((0, 0), (0, 0))),
                                             ((3, 3), ((0, 0), (0, 1))), ((7, 1), ((3, 3), (0, 0))),
                                             ((1, 3), ((0, 0), (1, 1)))])
def test_probe_conv_algorithms_compute_the_convolution(kernel, padding):
    """probe_conv_algorithms.py's Winograd F(2x2, 3x3) and patch-product convolutions equal lax's.

    Images ``float32 [2, 9, 13, 5]``, kernels ``[kh, kw, 5, 4]`` (HWIO): odd output heights and widths
    (Winograd's 2x2 tiles cropped), and the one-column padding ``qcamo_jax.models.conv`` gives unpadded
    stride-1 convolutions.
    """
    import jax
    import numpy as np
    from jax import lax

    import probe_conv_algorithms as probe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 13, 5)).astype(np.float32)
    w = rng.normal(size=(*kernel, 5, 4)).astype(np.float32)
    ref = lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                   precision=lax.Precision.HIGHEST)
    algorithms = [probe.im2col_conv] + ([probe.winograd_conv] if kernel == (3, 3) else [])
    for algorithm in algorithms:
        out = jax.jit(algorithm, static_argnums=2)(x, w, padding)
        assert out.shape == ref.shape
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)


def test_probe_kernel_efficiency_classifies_and_times_a_real_trace(tmp_path):
    """probe_kernel_efficiency.py's thunk breakdown on a compiled program and its profiler trace.

    A strided 3x3 convolution (``float32 [1, 17, 17, 32]`` -> ``[1, 8, 8, 48]``) and a product
    (``[64, 48] @ [48, 40]``), forward + input gradient, compiled with the package's XLA:CPU flags
    (which of them land in one fusion is XLA's choice): every thunk of a profiled call is classified,
    the FLOPs per thunk add up to XLA's own count, and the start-to-next-start attribution charges
    made-up events as documented.
    """
    import glob
    import gzip
    import json

    import numpy as np
    from jax import lax

    import probe_kernel_efficiency as probe

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(1, 17, 17, 32)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(3, 3, 32, 48)).astype(np.float32))
    m = jnp.asarray(rng.normal(size=(48, 40)).astype(np.float32))

    def loss(image):
        y = lax.conv_general_dilated(image, w, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.sum(jnp.tanh(y.reshape(64, 48) @ m))

    compiled = jax.jit(jax.grad(loss)).lower(x).compile()
    text = compiled.as_text()
    kinds = probe.classify_program(text)
    classes = " ".join(k for k, _ in kinds.values())
    assert "conv 3x3/s" in classes and "conv 3x3/lhs-dilated" in classes and "product" in classes, kinds
    conv_flops, product_flops = 2.0 * 8 * 8 * 48 * 3 * 3 * 32, 2.0 * 64 * 40 * 48
    # Forward convolution, its input gradient (the same multiply-adds over the 2x-dilated cotangent),
    # the product and the product's input gradient; XLA's count adds the elementwise work.
    counted = sum(f for _, f in kinds.values() if f)
    assert counted == 2 * conv_flops + 2 * product_flops
    assert counted <= compiled.cost_analysis()["flops"] <= 1.05 * counted

    trace_dir = str(tmp_path / "trace")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(2):
            jax.block_until_ready(compiled(x))
    (path,) = glob.glob(trace_dir + "/**/perfetto_trace.json.gz", recursive=True)
    with gzip.open(path, "rt") as f:
        events = json.load(f)["traceEvents"]
    out = probe.thunk_breakdown(events, text)
    assert out["calls"] == 2
    assert "other" not in out["classes"], out["classes"]  # every thunk is an instruction of the program
    with pytest.raises(ValueError):
        probe.thunk_breakdown([], text)

    # The attribution on made-up events (microseconds): the first thunk, returning at once like an
    # asynchronous convolution, is charged until the next one starts; the last, its own duration. An
    # event of another program is left out.
    first, last = list(kinds)[:2]
    module = re.search(r"^HloModule ([^,\s]+)", text, re.M).group(1)
    made_up = [{"ph": "X", "name": name, "ts": start + offset, "dur": dur,
                "args": {"hlo_op": name, "run_id": run, "hlo_module": module}}
               for run, offset in (("1", 0.0), ("2", 5000.0)) for name, start, dur in ((first, 0.0, 10.0), (last, 1000.0, 500.0))]
    made_up.append({"ph": "X", "name": first, "ts": 0.0, "dur": 9e6, "args": {"hlo_op": first, "run_id": "3", "hlo_module": "another"}})
    out = probe.thunk_breakdown(made_up, text)
    assert out["calls"] == 2 and out["span_ms"] == [1.5, 1.5]
    charged = {kinds[first][0]: 0.0, kinds[last][0]: 0.0}
    charged[kinds[first][0]] += 1.0
    charged[kinds[last][0]] += 0.5
    assert {k: c["ms"] for k, c in out["classes"].items()} == charged
