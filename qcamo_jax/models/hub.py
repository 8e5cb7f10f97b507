"""Load a quality model by name or path: the one place that maps a checkpoint to a Flax module.

``load_model("default")`` gives the embedded default model shipped in ``weights/``;
``load_model("path/to/file.safetensors")`` a converted KonCept512 (see :mod:`qcamo_jax.models.convert`)
or any checkpoint written by :func:`qcamo_jax.models.checkpoint.save`; ``load_model("tiny-random")``
a randomly initialised tiny KonCept512 for tests and demos. Models come back in their
:func:`inference_form` (KonCept512's batch norms folded into its convolutions) unless
``inference=False`` asks for the standard form the checkpoint holds.

Architectures register here as ``name -> "module:function"``; the function takes the checkpoint's
``config`` keyword arguments and returns a Flax module. Imports are lazy so that loading one
architecture does not import the others.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import flax.linen as nn

from qcamo_jax.errors import WeightFileError
from qcamo_jax.models import checkpoint

#: architecture name -> "module:builder"; builder(**config) -> flax module.
ARCHITECTURES: dict[str, str] = {
    "koncept512": "qcamo_jax.models.koncept:build",
    "qcamo-small": "qcamo_jax.models.small:build",
}

#: architecture name -> "module:function" giving the variables of its inference form (the module
#: built with ``fused=True``); see :func:`inference_form`.
INFERENCE_FORMS: dict[str, str] = {
    "koncept512": "qcamo_jax.models.inference_form:fuse_koncept512",
}

DEFAULT_WEIGHTS = "default.safetensors"


def _weights_dir() -> Path:
    """Where the embedded default model lives.

    ``$QCAMO_WEIGHTS_DIR`` if set; else the repository's top-level ``weights/`` (source checkout or
    editable install); else ``<prefix>/share/qcamo_jax/weights``, where a regular (wheel) install puts
    it (pyproject ``data-files``).
    """
    if "QCAMO_WEIGHTS_DIR" in os.environ:
        return Path(os.environ["QCAMO_WEIGHTS_DIR"])
    repo = Path(__file__).resolve().parents[2] / "weights"
    if (repo / DEFAULT_WEIGHTS).is_file():
        return repo
    return Path(sys.prefix) / "share" / "qcamo_jax" / "weights"


#: Folder of the embedded default model (see :func:`_weights_dir`).
WEIGHTS_DIR = _weights_dir()


@dataclasses.dataclass(frozen=True)
class QualityModel:
    """A quality model ready to score: a Flax module, its variables and its provenance.

    Attributes:
      module: Flax module; ``module.apply(variables, pixels)`` maps ``float32 [B, H, W, 3]`` pixels in
        [0, 255] to ``float32 [B]`` scores.
      variables: ``{"params": ..., "batch_stats": ...}`` (inference mode, nothing is updated).
      metadata: checkpoint metadata (architecture, config, source file and hash, ...).
      input_size: ``(H, W)`` the model was trained at (KonCept512: (384, 512)).
      min_size: smallest ``(H, W)`` the architecture accepts.
    """

    module: nn.Module
    variables: Mapping[str, Any]
    metadata: Mapping[str, str]
    input_size: tuple[int, int]
    min_size: tuple[int, int]

    def apply(self, variables: Mapping[str, Any], pixels: jax.Array) -> jax.Array:
        """Pure batched score: ``pixels`` float ``[B, H, W, 3]`` in [0, 255] -> ``float32 [B]``."""
        return self.module.apply(variables, jnp.asarray(pixels, jnp.float32))

    def score_one(self, variables: Mapping[str, Any], image: jax.Array) -> jax.Array:
        """Pure single-image score: ``image`` ``[H, W, 3]`` pixels -> scalar. Batch it with ``vmap``."""
        return self.apply(variables, image[None])[0]

    def score_fn(self) -> Callable[[Mapping[str, Any], jax.Array], jax.Array]:
        """The single-image score as a plain function ``(variables, image) -> scalar`` for attacks."""
        return self.score_one

    @property
    def name(self) -> str:
        return self.metadata.get("name", self.metadata.get("architecture", "model"))


def build_module(architecture: str, config: Mapping[str, Any]) -> nn.Module:
    """Instantiate a registered architecture with its config."""
    if architecture not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    return _resolve(ARCHITECTURES[architecture])(**config)


def _resolve(spec: str) -> Callable:
    """The function a registry entry ``"module:function"`` names (imported on first use)."""
    mod_name, fn_name = spec.split(":")
    return getattr(importlib.import_module(mod_name), fn_name)


def from_variables(
    architecture: str, config: Mapping[str, Any], variables: Mapping[str, Any], metadata: Mapping[str, str] | None = None,
    source: str = "<memory>",
) -> QualityModel:
    """Wrap a variable tree as a :class:`QualityModel`, checking it against the architecture."""
    module = build_module(architecture, config)
    h, w = module.input_size
    template = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, h, w, 3), jnp.float32))
    checked = checkpoint.check_against_template(variables, template, source)
    meta = {"architecture": architecture, "config": json.dumps(dict(config), sort_keys=True), **(metadata or {})}
    return QualityModel(module, jax.tree.map(jnp.asarray, checked), meta, tuple(module.input_size), tuple(module.min_size))


def init_random(architecture: str, config: Mapping[str, Any], seed: int = 0) -> QualityModel:
    """A randomly initialised model (tests, benchmarks; scores are meaningless).

    Cached per (architecture, config, seed): compiling ``module.init`` costs far more than the
    forward pass of a tiny model, and the result is immutable.
    """
    return _init_random_cached(architecture, json.dumps(dict(config), sort_keys=True), seed)


@functools.lru_cache(maxsize=8)
def _init_random_cached(architecture: str, config_json: str, seed: int) -> QualityModel:
    config = json.loads(config_json)
    module = build_module(architecture, config)
    h, w = module.input_size
    variables = jax.jit(module.init)(jax.random.PRNGKey(seed), jnp.zeros((1, h, w, 3), jnp.float32))
    meta = {"architecture": architecture, "config": json.dumps(dict(config), sort_keys=True), "name": f"{architecture}-random"}
    return QualityModel(module, variables, meta, tuple(module.input_size), tuple(module.min_size))


def load_file(path: str | os.PathLike) -> QualityModel:
    """Load a checkpoint written by :func:`qcamo_jax.models.checkpoint.save`."""
    flat, metadata = checkpoint.load_raw(path)
    architecture = metadata["architecture"]
    if architecture not in ARCHITECTURES:
        raise WeightFileError(f"unknown architecture {architecture!r} in metadata", path)
    try:
        config = json.loads(metadata["config"])
    except json.JSONDecodeError as exc:
        raise WeightFileError(f"bad config metadata ({exc})", path) from None
    metadata.setdefault("name", Path(path).stem)
    metadata.pop("form", None)  # a checkpoint holds the standard form (checkpoint.save); inference_form() sets it
    return from_variables(architecture, config, checkpoint.unflatten(flat), metadata, source=os.fspath(path))


def inference_form(model: QualityModel) -> QualityModel:
    """The same model in its inference form, for scoring and attacks (:data:`INFERENCE_FORMS`).

    KonCept512's batch norms are folded into its convolutions and its parallel 1x1 convolutions merged
    (:mod:`qcamo_jax.models.inference_form`): the same scores and gradients up to float32 rounding,
    computed faster. ``metadata["form"]`` becomes ``"inference"``. Architectures without such a form,
    and a model already in it, come back unchanged. The result's variables are not a checkpoint:
    convert, save and train the standard form.
    """
    architecture = model.metadata.get("architecture")
    if model.metadata.get("form") == "inference" or architecture not in INFERENCE_FORMS:
        return model
    variables = jax.tree.map(jnp.asarray, _resolve(INFERENCE_FORMS[architecture])(model.variables))
    return dataclasses.replace(model, module=model.module.clone(fused=True), variables=variables,
                               metadata={**model.metadata, "form": "inference"})


def load_model(spec: str | os.PathLike = "default", inference: bool = True) -> QualityModel:
    """Load a model by name (``default``, ``tiny-random``) or by checkpoint path.

    Args:
      spec: ``"default"``, ``"tiny-random"`` or a checkpoint path.
      inference: return the model's :func:`inference_form` (the default: faster, same scores up to
        float32 rounding); ``False`` gives the standard form, whose variables match the checkpoint.
    """
    model = _load_standard(os.fspath(spec))
    return inference_form(model) if inference else model


def _load_standard(spec_s: str) -> QualityModel:
    if spec_s == "default":
        path = WEIGHTS_DIR / DEFAULT_WEIGHTS
        if not path.is_file():
            raise WeightFileError("the embedded default model is missing (reinstall or use --model PATH)", path)
        return load_file(path)
    if spec_s == "tiny-random":
        return init_random("koncept512", {"variant": "keras", "size": "tiny"})
    if spec_s.endswith((".h5", ".pth", ".pt")):
        raise WeightFileError("convert this file first: qcamo convert SRC DST.safetensors", spec_s)
    return load_file(spec_s)
