"""qcamo_jax.host_malloc: the rules, and that a large block freed is reused without new page faults."""

import json
import os
import platform
import subprocess
import sys

import pytest

from qcamo_jax import host_malloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_settings_on_glibc_with_the_cpu():
    assert host_malloc.malloc_defaults({}, libc="glibc") == list(host_malloc.SETTINGS)
    assert host_malloc.malloc_defaults({"JAX_PLATFORMS": "cpu,cuda"}, libc="glibc") == list(host_malloc.SETTINGS)
    assert [name for name, _, _ in host_malloc.SETTINGS] == ["M_ARENA_MAX", "M_MMAP_MAX", "M_TRIM_THRESHOLD"]


@pytest.mark.parametrize("env, libc", [
    ({}, ""),                                                         # not glibc (musl, macOS)
    ({"QCAMO_MALLOC_DEFAULTS": "0"}, "glibc"),                        # switched off
    ({"QCAMO_MALLOC_DEFAULTS": "no"}, "glibc"),
    ({"JAX_PLATFORMS": "cuda"}, "glibc"),                             # no CPU backend: buffers on the device
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}, "glibc"),        # the user tunes malloc
    ({"MALLOC_ARENA_MAX": "2"}, "glibc"),
    ({"MALLOC_TRIM_THRESHOLD_": "0"}, "glibc"),
    ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, "glibc"),  # another allocator
])
def test_no_settings(env, libc):
    assert host_malloc.malloc_defaults(env, libc=libc) == []


@pytest.mark.parametrize("env, reason", [
    ({"MALLOC_ARENA_MAX": "2"}, "MALLOC_ARENA_MAX is set"),
    ({"QCAMO_MALLOC_DEFAULTS": "off"}, "QCAMO_MALLOC_DEFAULTS=off"),
    ({"LD_PRELOAD": "libtcmalloc_minimal.so.4"}, "LD_PRELOAD brings tcmalloc"),
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, "GLIBC_TUNABLES sets glibc.malloc tunables"),
    ({"JAX_PLATFORMS": "tpu"}, "JAX_PLATFORMS=tpu has no cpu"),
    ({"MALLOC_CHECK_": "3", "MALLOC_PERTURB_": "7"}, None),   # debugging aids, not tuning
])
def test_skip_reasons_name_the_cause(env, reason):
    assert host_malloc.skip_reason(env, libc="glibc") == reason


def test_too_late_once_a_backend_runs():
    """In this test process JAX already runs: apply() sets nothing and says why."""
    import jax.numpy as jnp

    jnp.zeros(1).block_until_ready()
    assert host_malloc.apply({}) == {}
    assert host_malloc.SKIPPED == "a JAX backend had already started"


def test_unrelated_tunables_leave_the_defaults():
    assert host_malloc.malloc_defaults({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F"}, libc="glibc") != []


_REUSE_SCRIPT = r"""
import ctypes, json, resource, threading
import qcamo_jax
from qcamo_jax import host_malloc

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
size = 128 * 2**20
faults = []

def calls():  # like XLA: a thread that is not the main one allocates, touches and frees a large buffer
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p = libc.malloc(size)
        ctypes.memset(p, 1, size)
        libc.free(p)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

t = threading.Thread(target=calls)
t.start()
t.join()
print(json.dumps({"applied": host_malloc.APPLIED, "skipped": host_malloc.SKIPPED, "faults": faults,
                  "pages": size // resource.getpagesize()}))
"""


def _reuse(switch: str) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", QCAMO_MALLOC_DEFAULTS=switch)
    for name in ("GLIBC_TUNABLES", "LD_PRELOAD", *host_malloc.USER_MALLOC_VARIABLES):
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-c", _REUSE_SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_import_makes_a_freed_large_block_reusable():
    on, off = _reuse("1"), _reuse("0")
    assert on["applied"] == {name: value for name, _, value in host_malloc.SETTINGS} and on["skipped"] is None
    assert off["applied"] == {} and off["skipped"] == "QCAMO_MALLOC_DEFAULTS=0"
    # Without the settings every call maps fresh memory and faults it all in again: as many faults as
    # the first call (a fault per page; fewer, larger ones where transparent huge pages are "always").
    assert off["faults"][0] > 0 and min(off["faults"]) > 0.9 * off["faults"][0], off
    # With them, the second and third calls reuse the heap memory the first one faulted in.
    assert on["faults"][0] > 0 and max(on["faults"][1:]) < 0.01 * max(on["faults"][0], 100), on
