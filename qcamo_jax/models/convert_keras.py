"""Keras ``.h5`` KonCept512 (the KonIQ project's ``koncep512-trained-model.h5``) -> Flax variables.

Mapping rules (explicit, by structure and position, as Keras' own legacy loader does):

1. The file is a legacy Keras HDF5 file: either weights only (``model.save_weights``; the layer groups
   are at the root) or a full model (``model.save``; the same groups under ``model_weights/``). The
   root attribute ``layer_names`` lists the model's layers in ``model.layers`` order; Keras writes it in
   chunks ``layer_names0``, ``layer_names1``... when it exceeds the 64 KiB attribute limit, as bytes
   (h5py < 3, Keras 2) or str. Each layer group has ``weight_names`` (also possibly chunked), in the
   legacy order *trainable weights, then non-trainable* (batch norm: [gamma,] beta, moving mean,
   moving variance).
2. Layer *names* differ between Keras flavours (standalone Keras 2 numbers unnamed layers from 1,
   ``conv2d_1``; tf.keras and Keras 3 from 0, ``conv2d``) and say nothing reliable about the place of
   a layer in the graph, so names are only used to find the groups. A weighted layer's place is its
   position among the layers with weights, exactly like ``load_weights_from_hdf5_group``.
3. The expected position order is computed here, without Keras: :func:`keras_graph` rebuilds the graph of
   ``keras.applications.InceptionResNetV2(include_top=False)`` + global average pooling + the kuti head,
   node for node (Conv2D, BatchNormalization, Activation, pooling, Concatenate, the scale layer), and
   :func:`keras_layer_order` sorts it like Keras' ``map_graph`` (decreasing depth from the output, ties
   by depth-first traversal index). This is the ``model.layers`` order of every Keras version since
   2.0, so it holds for files written by Keras 2, tf.keras and Keras 3.
4. Every position is checked: kind (convolution with / without bias, batch norm with / without gamma,
   dense) and every shape. Any mismatch is a one-line :class:`~qcamo_jax.errors.WeightFileError`.
5. Tensor layouts: Conv2D kernels are HWIO and Dense kernels (in, out) in Keras as in Flax: no transpose.
   Batch norm ``moving_mean`` / ``moving_variance`` -> ``batch_stats`` ``mean`` / ``var``.

The Keras 3 native ``.weights.h5`` layout (``layers/<name>/vars/0``) stores layers by name only and is
refused with a hint (re-save with ``model.save_weights("x.h5")`` or load it in Keras first).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

from qcamo_jax.errors import WeightFileError

#: Number of layers with weights in the Keras KonCept512 (backbone 448 + head 7).
N_WEIGHTED_LAYERS = 455


class Node(NamedTuple):
    """One Keras layer of the graph: its inputs (node ids), kind, and Flax path (weighted layers)."""

    inputs: tuple[int, ...]
    kind: str  # conv, conv_bias, bn, dense, bn_head, or a weightless kind (input, act, pool, concat, scale)
    path: str | None


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[Node] = []

    def add(self, kind: str, inputs: tuple[int, ...] = (), path: str | None = None) -> int:
        self.nodes.append(Node(tuple(inputs), kind, path))
        return len(self.nodes) - 1

    def conv_bn(self, x: int, path: str, activation: bool = True) -> int:
        """Keras ``conv2d_bn``: Conv2D (no bias) -> BatchNormalization(scale=False) -> Activation."""
        x = self.add("conv", (x,), f"{path}/conv")
        x = self.add("bn", (x,), f"{path}/bn")
        return self.add("act", (x,)) if activation else x


def keras_graph(repeats: tuple[int, int, int] = (10, 20, 9)) -> tuple[_Graph, int]:
    """The Keras KonCept512 graph, nodes in creation order (as in ``keras.applications``), and its output.

    Flax paths are relative to ``params/`` (``backbone/...`` and the head's ``dense_*`` / ``bn_*``).
    """
    g = _Graph()
    b = "backbone"
    x = g.add("input")
    x = g.conv_bn(x, f"{b}/conv2d_1a")
    x = g.conv_bn(x, f"{b}/conv2d_2a")
    x = g.conv_bn(x, f"{b}/conv2d_2b")
    x = g.add("pool", (x,))
    x = g.conv_bn(x, f"{b}/conv2d_3b")
    x = g.conv_bn(x, f"{b}/conv2d_4a")
    x = g.add("pool", (x,))
    m = f"{b}/mixed_5b"
    b0 = g.conv_bn(x, f"{m}/branch0")
    b1 = g.conv_bn(g.conv_bn(x, f"{m}/branch1_0"), f"{m}/branch1_1")
    b2 = g.conv_bn(g.conv_bn(g.conv_bn(x, f"{m}/branch2_0"), f"{m}/branch2_1"), f"{m}/branch2_2")
    b3 = g.conv_bn(g.add("pool", (x,)), f"{m}/branch3")
    x = g.add("concat", (b0, b1, b2, b3))

    def block(x: int, name: str, n_convs: tuple[int, ...], activation: bool = True) -> int:
        branches = []
        for i, n in enumerate(n_convs):
            y = x
            for j in range(n):
                y = g.conv_bn(y, f"{b}/{name}/branch{i}" if n == 1 else f"{b}/{name}/branch{i}_{j}")
            branches.append(y)
        up = g.add("conv_bias", (g.add("concat", tuple(branches)),), f"{b}/{name}/conv")
        x = g.add("scale", (x, up))  # CustomScaleLayer / Lambda([x, up])
        return g.add("act", (x,)) if activation else x

    n35, n17, n8 = repeats
    for i in range(n35):
        x = block(x, f"block35_{i + 1}", (1, 2, 3))
    m = f"{b}/mixed_6a"
    b0 = g.conv_bn(x, f"{m}/branch0")
    b1 = g.conv_bn(g.conv_bn(g.conv_bn(x, f"{m}/branch1_0"), f"{m}/branch1_1"), f"{m}/branch1_2")
    x = g.add("concat", (b0, b1, g.add("pool", (x,))))
    for i in range(n17):
        x = block(x, f"block17_{i + 1}", (1, 3))
    m = f"{b}/mixed_7a"
    b0 = g.conv_bn(g.conv_bn(x, f"{m}/branch0_0"), f"{m}/branch0_1")
    b1 = g.conv_bn(g.conv_bn(x, f"{m}/branch1_0"), f"{m}/branch1_1")
    b2 = g.conv_bn(g.conv_bn(g.conv_bn(x, f"{m}/branch2_0"), f"{m}/branch2_1"), f"{m}/branch2_2")
    x = g.add("concat", (b0, b1, b2, g.add("pool", (x,))))
    for i in range(n8):
        x = block(x, f"block8_{i + 1}", (1, 3))
    x = block(x, f"block8_{n8 + 1}", (1, 3), activation=False)
    x = g.conv_bn(x, f"{b}/conv2d_7b")
    x = g.add("gap", (x,))
    for i in range(3):  # kuti fc_layers: Dense(relu) -> BatchNormalization -> Dropout
        x = g.add("dense", (x,), f"dense_{i}")
        x = g.add("bn_head", (x,), f"bn_{i}")
        x = g.add("dropout", (x,))
    x = g.add("dense", (x,), "dense_out")
    return g, x


def keras_layer_order(graph: _Graph, output: int) -> list[int]:
    """Node ids in Keras ``model.layers`` order (``keras.src.ops.function.map_graph``).

    Depth-first traversal from the output visiting inputs in order gives each layer a traversal index
    (first visit) and a post-order; depths are propagated over the reversed post-order
    (``depth(input) = max(depth(input), depth(node) + 1)``); layers are sorted by decreasing depth, ties
    by traversal index. Iterative, so that the 800-layer chain does not hit Python's recursion limit.
    """
    nodes = graph.nodes
    index: dict[int, int] = {}
    finished: set[int] = set()
    post: list[int] = []
    stack = [(output, 0)]
    while stack:
        n, i = stack.pop()
        if i == 0:
            if n in finished:
                continue
            index.setdefault(n, len(index))
        if i < len(nodes[n].inputs):
            stack.append((n, i + 1))
            stack.append((nodes[n].inputs[i], 0))
        else:
            finished.add(n)
            post.append(n)
    depth: dict[int, int] = {}
    for n in reversed(post):
        d = depth.setdefault(n, 0)
        for p in nodes[n].inputs:
            depth[p] = max(d + 1, depth.get(p, 0))
    return sorted(post, key=lambda n: (-depth[n], index[n]))


def weighted_layer_order(repeats: tuple[int, int, int] = (10, 20, 9)) -> list[tuple[str, str]]:
    """``[(kind, flax_path)]`` of the layers with weights, in Keras ``model.layers`` order."""
    graph, out = keras_graph(repeats)
    return [(graph.nodes[n].kind, graph.nodes[n].path) for n in keras_layer_order(graph, out) if graph.nodes[n].path]


# ---------------------------------------------------------------------------------------------------
# Reading the file


def _attr_list(group: Any, name: str) -> list[str] | None:
    """A possibly chunked string-list attribute (``name`` or ``name0``, ``name1``...), bytes or str."""
    if name in group.attrs:
        raw = list(np.atleast_1d(group.attrs[name]))
    elif f"{name}0" in group.attrs:
        raw, k = [], 0
        while f"{name}{k}" in group.attrs:
            raw.extend(np.atleast_1d(group.attrs[f"{name}{k}"]))
            k += 1
    else:
        return None
    return [v.decode("utf8") if isinstance(v, (bytes, np.bytes_)) else str(v) for v in raw]


def read_weighted_layers(path: str | os.PathLike) -> list[tuple[str, list[np.ndarray]]]:
    """``[(layer_name, [arrays in legacy order])]`` of the layers with weights, in file order.

    Raises:
      WeightFileError: not an HDF5 file, truncated, not a legacy Keras weight layout.
    """
    import h5py

    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise WeightFileError(f"not a readable HDF5 file ({exc})", path) from None
    try:
        with f:
            root = f["model_weights"] if "model_weights" in f else f
            names = _attr_list(root, "layer_names")
            if names is None:
                if isinstance(f.get("layers"), h5py.Group):
                    raise WeightFileError(
                        "Keras 3 native .weights.h5 layout (layers stored by name only) is not supported; "
                        "load it in Keras and save again with model.save('model.h5')", path)
                raise WeightFileError("HDF5 file without a Keras 'layer_names' attribute (not a Keras weight file)", path)
            layers = []
            for name in names:
                if name not in root:
                    raise WeightFileError(f"layer {name!r} listed in layer_names has no group", path)
                group = root[name]
                weight_names = _attr_list(group, "weight_names") or []
                arrays = []
                for wn in weight_names:
                    if wn not in group:
                        raise WeightFileError(f"weight {wn!r} of layer {name!r} is missing", path)
                    arrays.append(np.asarray(group[wn], dtype=np.float32))
                if arrays:
                    layers.append((name, arrays))
            return layers
    except WeightFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise WeightFileError(f"corrupt or truncated HDF5 file ({type(exc).__name__}: {exc})", path) from None


def _lookup(tree: dict, path: str) -> Any:
    for key in path.split("/"):
        tree = tree[key]
    return tree


def _set(tree: dict, path: str, value: np.ndarray) -> None:
    *parents, leaf = path.split("/")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def convert(path: str | os.PathLike, template: dict) -> dict:
    """Read a Keras KonCept512 ``.h5`` into a Flax variable tree shaped like ``template``.

    Args:
      path: the ``.h5`` file (weights-only or full-model legacy layout).
      template: ``jax.eval_shape(module.init, ...)`` of ``koncept.build("keras")``.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` of float32 numpy arrays.

    Raises:
      WeightFileError naming the file and the first mismatch (count, kind or shape).
    """
    layers = read_weighted_layers(path)
    order = weighted_layer_order()
    if len(layers) != len(order):
        raise WeightFileError(
            f"has {len(layers)} layers with weights; the Keras KonCept512 has {len(order)} "
            "(InceptionResNetV2 backbone + kuti head)", path)
    params, stats = template["params"], template["batch_stats"]
    out: dict = {"params": {}, "batch_stats": {}}
    for pos, ((name, arrays), (kind, fpath)) in enumerate(zip(layers, order)):
        where = f"layer #{pos} {name!r} (expected {kind} {fpath})"
        if kind in ("conv", "conv_bias", "dense"):
            want = [_lookup(params, fpath)["kernel"].shape]
            if kind != "conv":
                want.append(_lookup(params, fpath)["bias"].shape)
            targets = [("params", f"{fpath}/kernel"), ("params", f"{fpath}/bias")][: len(want)]
        else:  # batch norm: [gamma,] beta, moving_mean, moving_variance
            p, s = _lookup(params, fpath), _lookup(stats, fpath)
            names = (["scale"] if "scale" in p else []) + ["bias"]
            want = [p[n].shape for n in names] + [s["mean"].shape, s["var"].shape]
            targets = [("params", f"{fpath}/{n}") for n in names] + [
                ("batch_stats", f"{fpath}/mean"), ("batch_stats", f"{fpath}/var")]
        got = [tuple(a.shape) for a in arrays]
        if got != [tuple(w) for w in want]:
            raise WeightFileError(f"{where}: weight shapes {got} != expected {[tuple(w) for w in want]}", path)
        for (collection, tpath), array in zip(targets, arrays):
            _set(out[collection], tpath, array)
    return out
