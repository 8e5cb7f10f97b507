"""The benchmarks' common output: one JSON object on stdout, and atomically in a file if asked."""

from __future__ import annotations

import json
from typing import Any


def emit(report: dict[str, Any], path: str | None, indent: int = 1) -> int:
    """Print ``report`` as JSON and, with ``path``, write it atomically there; returns exit status 0."""
    text = json.dumps(report, indent=indent)
    print(text)
    if path:
        from qcamo_jax.fileio import atomic_write

        with atomic_write(path, "w") as f:
            f.write(text + "\n")
    return 0
