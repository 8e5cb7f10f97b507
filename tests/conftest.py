import os
import sys

# Tests run on the CPU, deterministic and in float32 everywhere.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(__file__))  # `import photos`

import shutil  # noqa: E402
import tempfile  # noqa: E402

import pytest  # noqa: E402

# One persistent compilation cache per test run (qcamo_jax/compile_cache.py), shared by the xdist workers
# (they inherit this process's environment) and the `qcamo` subprocesses the tests start, never the
# user's own cache: a program compiled by one test is loaded, not compiled again, by the next. The
# process that made the directory removes it at the end.
_OWN_CACHE = None
if "QCAMO_COMPILE_CACHE" not in os.environ:
    _OWN_CACHE = os.environ["QCAMO_COMPILE_CACHE"] = tempfile.mkdtemp(prefix="qcamo-test-xla-cache-")

from qcamo_jax import compile_cache  # noqa: E402

compile_cache.enable()


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """Path of the tiny ``qcamo-small`` checkpoint (tests/tiny_model.py), one per test module."""
    from tiny_model import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def tiny():
    """The tiny ``qcamo-small`` model of tests/tiny_model.py, built once per test module."""
    from tiny_model import tiny_model

    return tiny_model()
