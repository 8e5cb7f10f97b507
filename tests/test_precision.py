"""Speed options (qcamo_jax.precision) on the tiny KonCept512: what each one changes, and what it must not."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qcamo_jax import precision as pr
from qcamo_jax.models import hub


@pytest.fixture(scope="module")
def model():
    return hub.load_model("tiny-random")


@pytest.fixture(scope="module")
def images():
    import photos

    return jnp.asarray(photos.photos((96, 128), names=("astronaut", "chelsea")), jnp.float32)


def _scores_and_grads(fn, variables, x):
    return jax.jit(jax.vmap(jax.value_and_grad(fn, argnums=1), in_axes=(None, 0)))(variables, x)


def test_parse_and_describe_round_trip():
    for spec, want in [
        ("", pr.SpeedOptions()),
        ("fp32", pr.SpeedOptions()),
        ("tf32", pr.SpeedOptions(matmul="tf32")),
        ("bf16-matmul", pr.SpeedOptions(matmul="bf16")),
        ("bf16, remat", pr.SpeedOptions(matmul="bf16", dtype="bfloat16", remat=True)),
        ("remat,donate", pr.SpeedOptions(remat=True, donate=True)),
    ]:
        got = pr.SpeedOptions.parse(spec)
        assert got == want, spec
        assert pr.SpeedOptions.parse(got.describe()) == got
    with pytest.raises(ValueError, match="unknown speed option"):
        pr.SpeedOptions.parse("fp16")
    with pytest.raises(ValueError):
        pr.SpeedOptions(dtype="float16")


def test_matmul_precision_reaches_every_convolution(model, images):
    for spec, want in [("fp32", "HIGHEST"), ("tf32", "HIGH"), ("bf16-matmul", "DEFAULT")]:
        fn = pr.wrap(model.score_one, pr.SpeedOptions.parse(spec))
        jaxpr = str(jax.make_jaxpr(jax.grad(fn, argnums=1))(model.variables, images[0]))
        found = set(re.findall(r"precision=\(Precision\.(\w+)", jaxpr))
        assert found == {want}, (spec, found)
    # "default" leaves the function untouched: the backend decides.
    fn = model.score_one
    assert pr.wrap(fn, pr.SpeedOptions(matmul="default")) is fn


@pytest.fixture(scope="module")
def ref(model, images):
    return _scores_and_grads(model.score_one, model.variables, images)


def test_matmul_and_remat_options_do_not_change_results_on_cpu(model, images, ref):
    ref_grads = ref[1]
    _, got = _scores_and_grads(pr.wrap(model.score_one, pr.SpeedOptions.parse("tf32,remat")), model.variables, images)
    # XLA:CPU has no TF32 passes and recomputation is exact: equal up to re-association.
    scale = float(jnp.abs(ref_grads).max())
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref_grads), rtol=1e-4, atol=1e-6 * scale)


def test_bf16_runs_activations_in_bf16_and_returns_float32(model, images, ref):
    ref_scores, ref_grads = ref
    opts = pr.SpeedOptions.parse("bf16")
    variables = pr.prepare_variables(model.variables, opts)
    assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.bfloat16)}
    fn = pr.wrap(model.score_one, opts)
    jaxpr = str(jax.make_jaxpr(jax.grad(fn, argnums=1))(variables, images[0]))
    conv_out = set(re.findall(r"(\w+)\[[\d,]+\] = conv_general_dilated", jaxpr))
    assert conv_out == {"bf16"}, conv_out
    scores, grads = _scores_and_grads(fn, variables, images)
    assert scores.dtype == jnp.float32 and grads.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(scores), np.asarray(ref_scores), atol=0.05, rtol=0.05)
    flat, ref = grads.reshape(len(images), -1), ref_grads.reshape(len(images), -1)
    cos = jnp.sum(flat * ref, axis=1) / (jnp.linalg.norm(flat, axis=1) * jnp.linalg.norm(ref, axis=1))
    # bfloat16 keeps the gradient direction roughly but not exactly (that is the trade).
    assert bool(jnp.all(cos > 0.8)) and bool(jnp.all(cos < 0.99999)), cos


def test_remat_wraps_every_block_once_and_recomputes_it(images):
    model = hub.load_model("tiny-random", inference=False)  # the standard form: 36 convolutions in the blocks
    fn = pr.wrap(model.score_one, pr.SpeedOptions.parse("remat"))
    grad = jax.grad(fn, argnums=1)
    jaxpr = str(jax.make_jaxpr(grad)(model.variables, images[0]))
    # Tiny KonCept: block35, block17, block8, final block8, mixed_5b, mixed_6a, mixed_7a.
    assert jaxpr.count("remat") == 7
    # Convolutions and products: on CPU the 1x1 convolutions are dot_generals (qcamo_jax.models.conv).
    convs = lambda f: sum(jax.jit(f).lower(model.variables, images[0]).as_text().count(op)  # noqa: E731
                          for op in ("stablehlo.convolution", "stablehlo.dot_general"))
    # The backward pass runs each block's forward again (XLA:CPU later folds the copies back into one:
    # on this backend remat saves nothing; on GPU the optimisation barriers keep them apart).
    assert convs(grad) > convs(jax.grad(model.score_one, argnums=1)) + 30
    none = pr.wrap(model.score_one, pr.SpeedOptions(remat=True, remat_pattern="NoSuchModule"))
    assert "remat" not in str(jax.make_jaxpr(jax.grad(none, argnums=1))(model.variables, images[0]))


def test_donation_invalidates_only_when_asked():
    f = lambda x: x * 2.0
    for donate, deleted in ((False, False), (True, True)):
        opts = pr.SpeedOptions(donate=donate)
        x = jnp.ones((4, 8, 8, 3))
        jax.jit(f, donate_argnums=pr.donate_argnums(opts, (0,)))(x).block_until_ready()
        assert x.is_deleted() == deleted
