"""The tiny randomly initialised ``qcamo-small`` that CLI and pipeline tests attack (fast on 2 CPU cores).

``--model tiny-random`` (a tiny KonCept512) compiles for over 40 s per run on a 2-core CPU; this one
compiles in seconds. The ``tiny_checkpoint`` fixture (tests/conftest.py) saves it as a checkpoint file.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_CONFIG = {"widths": [4, 4, 8, 8, 8], "head": [8, 4], "input_size": [64, 64]}


def tiny_model():
    """The tiny ``qcamo-small`` (:class:`qcamo_jax.models.hub.QualityModel`, seed 1)."""
    from qcamo_jax.models.hub import init_random

    return init_random("qcamo-small", TINY_CONFIG, seed=1)


def save_tiny_checkpoint(path: Path) -> Path:
    """Write :func:`tiny_model` to ``path`` as a ``.safetensors`` checkpoint the CLI loads with ``--model``."""
    from qcamo_jax.models import checkpoint

    checkpoint.save(path, tiny_model().variables,
                    {"architecture": "qcamo-small", "config": json.dumps(TINY_CONFIG), "name": "tiny"})
    return path
