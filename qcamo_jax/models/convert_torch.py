"""PyTorch ``.pth`` KonCept512 (the MediaEval 2020 port, ``KonCept512.pth``) -> Flax variables.

The file is a ``state_dict`` of the model described in :mod:`qcamo_jax.testing.torch_koncept`: keys
``base.<i>.*`` (the children of Cadene's InceptionResNetV2 without ``last_linear``) and ``fc.<i>.*``.
It is read with ``torch.load(..., weights_only=True)`` only (no pickled code runs); torch is imported
lazily and is an optional extra (``pip install qcamo_jax[torch]``).

Mapping rules, applied in order to every key (explicit and total: a key no rule maps is an error):

1. a leading ``module.`` (``nn.DataParallel``) is dropped; ``num_batches_tracked`` is ignored;
2. ``base.<i>`` -> the backbone child with that index (:data:`BASE_CHILDREN`); ``repeat``, ``repeat_1``,
   ``repeat_2`` ``.<k>`` -> ``block35_<k+1>``, ``block17_<k+1>``, ``block8_<k+1>``;
   ``base.13`` (Cadene's ``block8``, no ReLU) -> ``block8_10``;
3. inside blocks: ``branch<b>.<j>`` -> ``branch<b>_<j>``; ``mixed_5b.branch3.1`` -> ``branch3``
   (``branch3.0`` is the average pool); the residual ``conv2d`` -> ``conv``;
4. ``fc.0/4/8`` -> ``dense_0/1/2``, ``fc.2/6/10`` -> ``bn_0/1/2``, ``fc.12`` -> ``dense_out``;
5. leaves: conv ``weight`` (O, I, kH, kW) -> ``kernel`` (kH, kW, I, O); Linear ``weight`` (out, in) ->
   ``kernel`` (in, out); ``bias`` -> ``bias``; batch norm ``weight`` -> ``scale``, ``running_mean`` /
   ``running_var`` -> ``batch_stats`` ``mean`` / ``var``.

Every tensor's shape is then checked against the template (all problems listed).
"""

from __future__ import annotations

import os
import re

import numpy as np

from qcamo_jax.errors import WeightFileError

#: ``base.<i>`` -> Flax backbone module (indices of Cadene's ``children()``; 3, 6 are max pools, 15 avgpool_1a).
BASE_CHILDREN = {
    0: "conv2d_1a", 1: "conv2d_2a", 2: "conv2d_2b", 4: "conv2d_3b", 5: "conv2d_4a",
    7: "mixed_5b", 8: "block35", 9: "mixed_6a", 10: "block17", 11: "mixed_7a", 12: "block8",
    13: "block8_10", 14: "conv2d_7b",
}
#: ``fc.<i>`` -> head module.
FC_CHILDREN = {0: "dense_0", 2: "bn_0", 4: "dense_1", 6: "bn_1", 8: "dense_2", 10: "bn_2", 12: "dense_out"}
REPEATED = {"block35", "block17", "block8"}


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``torch.load(path, weights_only=True)`` as ``{key: float32 numpy}``, with one-line errors."""
    try:
        import torch
    except ImportError:
        raise WeightFileError("reading a .pth file needs PyTorch: pip install 'qcamo_jax[torch]'", path) from None
    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightFileError("no such weight file", path) from None
    except Exception as exc:  # torch raises many types (UnpicklingError, RuntimeError, EOFError...)
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightFileError(f"not a readable PyTorch state_dict ({type(exc).__name__}: {msg[:200]})", path) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise WeightFileError(f"holds a {type(obj).__name__}, not a state_dict", path)
    out = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise WeightFileError(f"entry {key!r} is a {type(value).__name__}, not a tensor", path)
        out[key] = value.detach().to(torch.float32).numpy() if value.is_floating_point() else value.numpy()
    return out


def map_key(key: str) -> tuple[str, str, str] | None:
    """A state_dict key -> ``(collection, flax_path, leaf_kind)`` or ``None`` for ignored keys.

    ``leaf_kind`` is ``conv``, ``linear``, ``bias``, ``scale``, ``mean`` or ``var``: it tells
    :func:`convert` how to lay the tensor out. Raises ``KeyError`` for a key no rule maps.
    """
    key = key.removeprefix("module.")
    if key.endswith("num_batches_tracked"):
        return None
    parts = key.split(".")
    if parts[0] == "base" and len(parts) >= 3 and parts[1].isdigit() and int(parts[1]) in BASE_CHILDREN:
        child = BASE_CHILDREN[int(parts[1])]
        rest = parts[2:]
        if child in REPEATED:
            if not rest[0].isdigit():
                raise KeyError(key)
            child, rest = f"{child}_{int(rest[0]) + 1}", rest[1:]
        path = ["backbone", child]
        while len(rest) > 2 or (len(rest) == 2 and rest[0] not in ("conv", "bn", "conv2d")):
            head = rest[0]
            if re.fullmatch(r"branch\d", head) and len(rest) > 1 and rest[1].isdigit():
                idx = int(rest[1])
                if child == "mixed_5b" and head == "branch3":
                    if idx != 1:
                        raise KeyError(key)
                    path.append("branch3")
                else:
                    path.append(f"{head}_{idx}")
                rest = rest[2:]
            elif re.fullmatch(r"branch\d", head):
                path.append(head)
                rest = rest[1:]
            else:
                raise KeyError(key)
        if len(rest) != 2:
            raise KeyError(key)
        module, leaf = rest
        if module == "conv2d":  # residual 1x1 conv with bias
            path.append("conv")
            return "params", "/".join(path), {"weight": "conv", "bias": "bias"}[leaf]
        path.append(module)
        if module == "conv" and leaf == "weight":
            return "params", "/".join(path), "conv"
        if module == "bn":
            return _bn_leaf(path, leaf, key)
        raise KeyError(key)
    if parts[0] == "fc" and len(parts) == 3 and parts[1].isdigit() and int(parts[1]) in FC_CHILDREN:
        name, leaf = FC_CHILDREN[int(parts[1])], parts[2]
        if name.startswith("bn"):
            return _bn_leaf([name], leaf, key)
        return "params", name, {"weight": "linear", "bias": "bias"}[leaf]
    raise KeyError(key)


def _bn_leaf(path: list[str], leaf: str, key: str) -> tuple[str, str, str]:
    p = "/".join(path)
    table = {"weight": ("params", "scale"), "bias": ("params", "bias"),
             "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}
    if leaf not in table:
        raise KeyError(key)
    collection, name = table[leaf]
    return collection, p, name


def convert(path: str | os.PathLike, template: dict) -> dict:
    """Read a MediaEval KonCept512 ``.pth`` into a Flax variable tree (``{"params", "batch_stats"}``).

    Args:
      path: the ``.pth`` state_dict.
      template: ``jax.eval_shape(module.init, ...)`` of ``koncept.build("mediaeval")``, used to name
        the leaves (the caller checks every shape against it).

    Raises:
      WeightFileError naming the file and the unmapped keys (all of them, up to 8 shown).
    """
    state = read_state_dict(path)
    out: dict = {"params": {}, "batch_stats": {}}
    unknown = []
    for key, value in state.items():
        try:
            mapped = map_key(key)
        except (KeyError, IndexError):
            unknown.append(key)
            continue
        if mapped is None:
            continue
        collection, fpath, kind = mapped
        if kind == "conv":
            leaf, value = "kernel", value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
        elif kind == "linear":
            leaf, value = "kernel", value.T if value.ndim == 2 else value
        else:
            leaf = kind
        node = out[collection]
        for k in fpath.split("/"):
            node = node.setdefault(k, {})
        node[leaf] = np.ascontiguousarray(value, dtype=np.float32)
    if unknown:
        raise WeightFileError(
            f"{len(unknown)} keys are not part of the MediaEval KonCept512: {', '.join(unknown[:8])}"
            f"{' ...' if len(unknown) > 8 else ''}", path)
    if not out["params"]:
        raise WeightFileError("state_dict holds no KonCept512 tensors", path)
    return out
