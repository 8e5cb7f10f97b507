"""The inference form of KonCept512: the same function with fewer, larger kernels and no batch norms.

Data contract: :func:`fuse_koncept512` takes the variables of a standard-form KonCept512
(``{"params", "batch_stats"}``, as converters, checkpoints and ``module.init`` give them; leaves
``float32`` arrays of any backend) and returns the variables of the same model with ``fused=True``
(:mod:`qcamo_jax.models.inception_resnet_v2`): ``float32`` numpy arrays, the backbone without batch
statistics, the head unchanged. Scores and input gradients agree with the standard form up to float32
rounding (``tests/test_inference_form.py``). It raises ``ValueError`` when a tree is not a
standard-form KonCept512 backbone. :func:`qcamo_jax.models.hub.inference_form` applies it to a
:class:`~qcamo_jax.models.hub.QualityModel`; :func:`qcamo_jax.models.hub.load_model` does so by default.

Why: an attack spends nearly all its time in the model's forward and input-gradient passes. On the
CPU every batch norm is an extra pass over its feature map in both, and every branch's own 1x1
convolution of a shared input is a separate product (and, in the gradient, a separate product plus a
sum). ``benchmarks/RESULTS.md`` has the measured gain.

Rules (computed in float64, stored as float32):

* **Batch norm folding** (standard inference-time conv-BN fusion, as in PyTorch's
  ``torch.nn.utils.fusion.fuse_conv_bn_weights``): a bias-free convolution ``W`` followed by an
  inference batch norm ``gamma * (y - mean) / sqrt(var + eps) + beta`` equals the convolution with
  kernel ``W * s`` (per output channel) and bias ``beta - mean * s``, ``s = gamma / sqrt(var + eps)``
  (``gamma = 1`` for the Keras variant, whose batch norms have no scale; ``eps`` =
  :data:`~qcamo_jax.models.inception_resnet_v2.BN_EPSILON`).
* **Fan-outs**: the folded 1x1 kernels ``[1, 1, C_in, C_i]`` of the branches listed in
  :data:`~qcamo_jax.models.inception_resnet_v2.FAN_OUTS` are concatenated along the output axis (and
  their biases with them), in the listed order, into one convolution named ``fan_out``.
* The head's batch norms follow a ReLU, not a convolution; they stay as they are (their cost is
  negligible next to the backbone's).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from qcamo_jax.models.inception_resnet_v2 import BN_EPSILON, FAN_OUT, FAN_OUTS


def fold_batch_norm(kernel: np.ndarray, bn_params: Mapping[str, Any], bn_stats: Mapping[str, Any],
                    epsilon: float = BN_EPSILON) -> tuple[np.ndarray, np.ndarray]:
    """Fold an inference batch norm into the bias-free convolution before it.

    Args:
      kernel: ``[kh, kw, C_in, C_out]`` convolution kernel (HWIO).
      bn_params: ``{"bias": [C_out]}`` and, with a gamma, ``{"scale": [C_out]}``.
      bn_stats: ``{"mean": [C_out], "var": [C_out]}`` moving statistics.
      epsilon: the batch norm's epsilon.

    Returns:
      ``(kernel, bias)``: float32 ``[kh, kw, C_in, C_out]`` and ``[C_out]``.
    """
    s = 1.0 / np.sqrt(np.asarray(bn_stats["var"], np.float64) + epsilon)
    if "scale" in bn_params:
        s = s * np.asarray(bn_params["scale"], np.float64)
    folded = np.asarray(kernel, np.float64) * s
    bias = np.asarray(bn_params["bias"], np.float64) - np.asarray(bn_stats["mean"], np.float64) * s
    return folded.astype(np.float32), bias.astype(np.float32)


def _as_numpy(tree: Mapping[str, Any]) -> dict:
    return {k: _as_numpy(v) if isinstance(v, Mapping) else np.asarray(v, np.float32) for k, v in tree.items()}


def _is_conv_bn(node: Any) -> bool:
    return (isinstance(node, Mapping) and set(node) == {"conv", "bn"} and isinstance(node["conv"], Mapping)
            and set(node["conv"]) == {"kernel"})


def _fold_tree(params: Mapping[str, Any], stats: Mapping[str, Any], path: str) -> dict:
    """Every ``ConvBN`` below ``params`` folded; other leaves copied as float32 numpy arrays."""
    out = {}
    for name, node in params.items():
        where = f"{path}/{name}"
        if _is_conv_bn(node):
            if name not in stats or "bn" not in stats[name]:
                raise ValueError(f"{where}: a batch norm without moving statistics")
            kernel, bias = fold_batch_norm(node["conv"]["kernel"], node["bn"], stats[name]["bn"])
            out[name] = {"conv": {"kernel": kernel, "bias": bias}}
        elif isinstance(node, Mapping):
            out[name] = _fold_tree(node, stats.get(name, {}), where)
        else:
            out[name] = np.asarray(node, np.float32)  # a residual block's own convolution (it has a bias)
    return out


def _merge_fan_outs(backbone: dict) -> None:
    """Replace each block's listed first 1x1 convolutions by one ``fan_out`` convolution (in place)."""
    for block_name, block in backbone.items():
        names = FAN_OUTS.get(block_name) or FAN_OUTS.get(block_name.split("_")[0])
        if names is None:
            continue
        missing = [n for n in names if n not in block]
        if missing:
            raise ValueError(f"backbone/{block_name}: no convolution named {', '.join(missing)}")
        convs = [block.pop(n)["conv"] for n in names]
        block[FAN_OUT] = {"conv": {"kernel": np.concatenate([c["kernel"] for c in convs], axis=-1),
                                   "bias": np.concatenate([c["bias"] for c in convs], axis=-1)}}


def fuse_koncept512(variables: Mapping[str, Any]) -> dict:
    """The inference-form variables of a standard-form KonCept512 (see the module docstring).

    Raises:
      ValueError: the tree has no ``params/backbone`` and ``batch_stats/backbone``, or a block lacks a
        convolution its fan-out needs.
    """
    params, stats = variables.get("params", {}), variables.get("batch_stats", {})
    if "backbone" not in params or "backbone" not in stats:
        raise ValueError("not a standard-form KonCept512: no params/backbone with batch_stats/backbone")
    backbone = _fold_tree(params["backbone"], stats["backbone"], "backbone")
    _merge_fan_outs(backbone)
    head_params = _as_numpy({k: v for k, v in params.items() if k != "backbone"})
    head_stats = _as_numpy({k: v for k, v in stats.items() if k != "backbone"})
    return {"params": {"backbone": backbone, **head_params}, "batch_stats": head_stats}
