"""qcamo_jax.xla_flags: the CPU defaults' rules, and gradients with the defaults equal those without."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from qcamo_jax import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE_FLAGS = xla_flags.vendor_flags()
FLAG = HERE_FLAGS[0]


def test_defaults_added_on_cpu_before_user_flags():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    added = xla_flags.apply(env)
    assert added == list(HERE_FLAGS)
    assert env["XLA_FLAGS"].split() == [*HERE_FLAGS, "--xla_force_host_platform_device_count=4"]
    assert xla_flags.cpu_defaults({"JAX_PLATFORMS": "cpu"}, "0.10") == list(HERE_FLAGS)


@pytest.mark.parametrize("vendor, expected", [
    ("GenuineIntel", "individual_convolution,dot"),   # YNNPACK convolutions measured faster on a Xeon
    ("AuthenticAMD", "dot"),                          # Eigen convolutions measured faster on an EPYC
    ("SomeOtherVendor", "individual_convolution,dot"),  # unknown: the fallback's list
])
def test_list_follows_the_cpu_vendor(vendor, expected):
    (flag,) = xla_flags.cpu_defaults({}, "0.10", vendor=vendor)
    assert flag == "--xla_cpu_experimental_ynn_fusion_type=" + expected


def test_cpu_vendor_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n")
    assert xla_flags.cpu_vendor(str(info)) == "AuthenticAMD"
    info.write_text("processor\t: 0\n")
    assert xla_flags.cpu_vendor(str(info)) is None
    assert xla_flags.cpu_vendor(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("env, version", [
    ({"QCAMO_XLA_DEFAULTS": "0"}, "0.10"),                      # switched off
    ({"QCAMO_XLA_DEFAULTS": "off"}, "0.10"),
    ({"JAX_PLATFORMS": "cuda"}, "0.10"),                          # no CPU backend requested
    ({}, "0.99"),                                                 # a jaxlib whose XLA was not checked
    ({"XLA_FLAGS": FLAG.split("=")[0] + "=dot"}, "0.10"),        # the user set that flag: theirs wins
])
def test_no_defaults(env, version):
    assert xla_flags.cpu_defaults(env, version) == []


_GRAD_SCRIPT = r"""
import json, os, sys
import numpy as np
import qcamo_jax  # applies (or, with QCAMO_XLA_DEFAULTS=0, skips) the defaults
import jax, jax.numpy as jnp
from qcamo_jax.models import hub

module = hub.build_module("koncept512", {"variant": "keras", "size": "tiny"})
h, w = module.input_size
template = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, h, w, 3), jnp.float32))
rng = np.random.default_rng(0)
def fill(path, leaf):  # random weights without compiling `init`; positive variances for the batch norms
    name = jax.tree_util.keystr(path)
    if "var" in name:
        return np.ones(leaf.shape, np.float32)
    fan_in = int(np.prod(leaf.shape[:-1])) if leaf.ndim > 1 else 1
    return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(np.float32)
variables = jax.tree_util.tree_map_with_path(fill, template)
model = hub.from_variables("koncept512", {"variant": "keras", "size": "tiny"}, variables)
x = jnp.asarray(np.random.default_rng(1).uniform(0, 255, (2, h, w, 3)), jnp.float32)
fn = jax.jit(jax.value_and_grad(lambda p: model.apply(model.variables, p).sum()))
value, grad = fn(x)
np.save(sys.argv[1], np.asarray(grad))
print(json.dumps({"xla_flags": os.environ.get("XLA_FLAGS", ""), "value": float(value)}))
"""


def _grad_in_subprocess(tmp_path, switch: str):
    out = tmp_path / f"grad-{switch}.npy"
    env = dict(os.environ, JAX_PLATFORMS="cpu", QCAMO_XLA_DEFAULTS=switch, PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-c", _GRAD_SCRIPT, str(out)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), np.load(out)


def test_tiny_koncept_gradient_same_with_and_without_defaults(tmp_path):
    if not xla_flags.cpu_defaults({}, None):
        pytest.skip("the installed jaxlib gets no default flags")
    info_on, grad_on = _grad_in_subprocess(tmp_path, "1")
    info_off, grad_off = _grad_in_subprocess(tmp_path, "0")
    assert FLAG in info_on["xla_flags"].split() and FLAG not in info_off["xla_flags"]
    np.testing.assert_allclose(info_on["value"], info_off["value"], rtol=1e-5)
    # Different convolution kernels sum in a different order: float32 round-off, nothing more.
    assert np.linalg.norm(grad_on - grad_off) <= 1e-4 * np.linalg.norm(grad_off)
    assert np.linalg.norm(grad_off) > 0
