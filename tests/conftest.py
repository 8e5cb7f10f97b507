import os
import sys

# Tests run on the CPU, deterministic and in float32 everywhere.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(__file__))  # `import photos`


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
