import os
import sys

# Tests run on the CPU, deterministic and in float32 everywhere.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(__file__))  # `import photos`
