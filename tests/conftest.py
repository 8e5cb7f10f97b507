import atexit
import os
import shutil
import sys
import tempfile

# Tests run on the CPU, deterministic and in float32 everywhere.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(__file__))  # `import photos`

# One JAX persistent compilation cache for the whole session: the pytest-xdist workers and every CLI
# subprocess inherit this environment, so a program several tests build (the default model's attack and
# quantizer at 384x512, the CLI's batch programs) is compiled once instead of once per test. XLA's flags
# are part of the cache key, so tests that change them compile their own. A user's own cache wins.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="qcamo_tests_jax_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, True)


import pytest  # noqa: E402


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
