"""The batch plan of a run: which images share an engine call, and how short calls are padded.

Data contract: an :class:`Item` is one input (its index in input order, path, output name, and after
probing its SHA-256 hex, shape ``(H, W, 3)`` and per-image seed). :func:`plan_batches` groups items by
shape (one compile per shape) and returns ``(shape, group batch size, [items])`` triples that depend
only on the *set* of items; :func:`engine_batch` turns one (possibly short or empty) part of a batch
into the fixed-size ``uint8 [size, H, W, 3]`` images and ``int64 [size]`` seeds of an engine call.
:func:`job_fingerprint` is what the processes of a multi-host job must agree on for their plans to match.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np


class Item:
    """One input of a run; ``sha``, ``shape`` and ``seed`` are filled in by probing (``None`` before)."""

    __slots__ = ("index", "path", "name", "sha", "shape", "seed")

    def __init__(self, index, path, name):
        self.index, self.path, self.name = index, path, name
        self.sha = self.shape = self.seed = None


def plan_batches(items: Sequence[Any], batch_size: int, shape_of=lambda it: it.shape, key_of=lambda it: it.name):
    """Group items by image shape and cut each group into batches.

    Within a group, items are sorted by ``key_of`` (the output name) and every batch has the group's
    batch size ``min(batch_size, len(group))`` (the last one is padded by the caller). Batches depend
    only on the set of items, so a resumed run recomputes a batch exactly as the first run did.

    Returns:
      list of ``(shape, group_batch_size, [items])``.
    """
    groups: dict[tuple, list] = {}
    for it in items:
        groups.setdefault(tuple(shape_of(it)), []).append(it)
    plan = []
    for shape in sorted(groups):
        g = sorted(groups[shape], key=key_of)
        b = max(1, min(int(batch_size), len(g)))
        plan.extend((shape, b, g[i:i + b]) for i in range(0, len(g), b))
    return plan


def job_fingerprint(paths: Sequence[Path], names: Sequence[str], shash: str, batch_size: int, resume: bool,
                    devices: Any) -> str:
    """Hash of everything the processes of a job must agree on for their batch plans to match."""
    blob = json.dumps([[os.fspath(p) for p in paths], list(names), shash, int(batch_size), bool(resume), str(devices)])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def engine_batch(images: Sequence[np.ndarray], seeds: Sequence[int], size: int,
                 shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The ``uint8 [size, H, W, 3]`` images and ``int64 [size]`` seeds of one engine call.

    Short parts are padded by repeating their last image (every call of a shape group has the same
    batch size: one compile per shape). A part with no image at all (a process with nothing left in
    a batch of a multi-process run, which must make the call all the same) is mid-grey images with
    seed 0, whose results are dropped.
    """
    from qcamo_jax.sharding import pad_batch

    if not images:
        images, seeds = [np.full(tuple(shape), 128, np.uint8)], [0]
    (x, s), _ = pad_batch((np.stack(images), np.asarray(seeds, np.int64)), 1, size)
    return x, s
