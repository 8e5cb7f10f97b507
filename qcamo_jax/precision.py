"""Options that trade numerical precision or memory for speed in the model's forward/gradient pass.

Three independent knobs, gathered in :class:`SpeedOptions` and applied by wrapping a model function
(never by editing the model):

* **Precision of the model pass.** ``matmul="highest"`` is true float32 everywhere. ``"tf32"`` lets
  convolutions and matmuls use TensorFloat-32 on GPUs that have it (Ampere and later: 10-bit
  mantissa inputs, float32 accumulation). ``"bf16"`` lets them use bfloat16 passes. These set
  :func:`jax.default_matmul_precision` while the function is traced; on a CPU they change nothing.
  ``dtype="bfloat16"`` goes further: the variables, and the inputs of every Flax submodule, are cast
  to bfloat16, so every activation is bfloat16 too (half the activation memory). The top-level module
  still receives float32 pixels and normalises them in float32 (KonCept512 casts its input to float32
  and maps it to [-1, 1]); the first submodule then rounds that to bfloat16, whose 8-bit mantissa
  resolves about 0.25-1 pixel unit: perturbations finer than that are invisible to the forward pass,
  although the gradient still reaches them. The score comes back as float32, and the gradient with
  respect to the float32 input image is float32.
  The attack and the quantizer keep working in float32 pixels either way.
* **Rematerialisation** (``remat=True``): each residual block of the backbone (any Flax submodule
  whose class name matches ``remat_pattern``) runs under :func:`flax.linen.checkpoint`
  (:func:`jax.checkpoint`): its intermediate activations are recomputed during the backward pass
  instead of stored, trading about one extra forward pass for memory, so larger batches fit.
* **Buffer donation** (``donate=True``): the jitted attack may reuse its input image buffer for its
  output (``donate_argnums``), saving one batch of images of device memory. The caller's array is
  invalidated, so only donate arrays you do not reuse.

Measured effects (speed, and success rate / distortion of the attack) are in
``benchmarks/RESULTS.md``; ``python benchmarks/run.py --only options`` reproduces them.

Example:
  >>> opts = SpeedOptions.parse("bf16,remat")
  >>> score = wrap(model.score_one, opts)        # (variables, image[H, W, 3]) -> float32 scalar
  >>> variables = prepare_variables(model.variables, opts)   # cast once, outside the loop
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import re
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

#: ``SpeedOptions.matmul`` value -> :func:`jax.default_matmul_precision` name.
MATMUL_PRECISIONS = {"default": None, "highest": "highest", "float32": "highest", "tf32": "tensorfloat32", "bf16": "bfloat16"}

#: Compute dtypes of the model pass.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

#: Class names of the blocks rematerialised by ``remat=True``: KonCept512's Inception-ResNet blocks
#: (``ResidualBlock``) and mixed/reduction modules (``Mixed5b``, ``Mixed6a``, ``Mixed7a``).
DEFAULT_REMAT_PATTERN = r"(?i)(block|mixed|reduction)"


@dataclasses.dataclass(frozen=True)
class SpeedOptions:
    """How to run the model pass. The defaults are the reference: float32 at full precision.

    Attributes:
      matmul: one of ``"highest"`` (alias ``"float32"``), ``"tf32"``, ``"bf16"``, ``"default"`` (the
        backend's own default: on recent NVIDIA GPUs XLA then already uses TF32 for float32 convs).
      dtype: ``"float32"`` or ``"bfloat16"``: dtype of the variables and activations in the model pass.
      remat: recompute block activations in the backward pass instead of storing them.
      remat_pattern: regular expression on Flax module class names selecting the blocks to remat.
      donate: let the jitted attack overwrite its input images (see :func:`donate_argnums`).
    """

    matmul: str = "highest"
    dtype: str = "float32"
    remat: bool = False
    remat_pattern: str = DEFAULT_REMAT_PATTERN
    donate: bool = False

    def __post_init__(self):
        if self.matmul not in MATMUL_PRECISIONS:
            raise ValueError(f"matmul must be one of {sorted(MATMUL_PRECISIONS)}, not {self.matmul!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {self.dtype!r}")
        re.compile(self.remat_pattern)

    @classmethod
    def parse(cls, spec: str | None) -> "SpeedOptions":
        """From a list separated by ``,`` or ``+``: ``fp32`` | ``tf32`` | ``bf16-matmul`` | ``bf16``, ``remat``, ``donate``.

        ``bf16`` means bfloat16 variables and activations (``dtype="bfloat16"``, ``matmul="bf16"``);
        ``bf16-matmul`` only lowers the precision of the float32 convolutions and matmuls. An empty
        spec or ``fp32`` gives the float32 reference.
        """
        fields: dict[str, Any] = {}
        for word in filter(None, (w.strip().lower() for w in re.split(r"[,+]", spec or ""))):
            if word in ("fp32", "float32", "highest"):
                fields.update(matmul="highest", dtype="float32")
            elif word == "tf32":
                fields.update(matmul="tf32")
            elif word == "bf16-matmul":
                fields.update(matmul="bf16")
            elif word in ("bf16", "bfloat16"):
                fields.update(matmul="bf16", dtype="bfloat16")
            elif word == "default":
                fields.update(matmul="default")
            elif word == "remat":
                fields.update(remat=True)
            elif word == "donate":
                fields.update(donate=True)
            else:
                raise ValueError(f"unknown speed option {word!r} (fp32, tf32, bf16-matmul, bf16, default, remat, donate)")
        return cls(**fields)

    def describe(self) -> str:
        """Short label, e.g. ``"bf16+remat"``: the inverse of :meth:`parse` for the labels it knows."""
        if self.dtype == "bfloat16":
            base = "bf16"
        else:
            base = {"highest": "fp32", "float32": "fp32", "tf32": "tf32", "bf16": "bf16-matmul", "default": "default"}[self.matmul]
        return "+".join([base] + ["remat"] * self.remat + ["donate"] * self.donate)


def cast_floats(tree: Any, dtype: Any) -> Any:
    """Cast every floating-point leaf of ``tree`` to ``dtype`` (integer leaves are left alone)."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x, tree)


def prepare_variables(variables: Any, options: SpeedOptions) -> Any:
    """The model variables in the compute dtype: cast them once, outside jitted loops."""
    return cast_floats(variables, DTYPES[options.dtype]) if options.dtype != "float32" else variables


def wrap(fn: Callable[..., jax.Array], options: SpeedOptions) -> Callable[..., jax.Array]:
    """Apply ``options`` to a model function ``fn(variables, pixels, *rest) -> scores``.

    Works for a single-image score (``QualityModel.score_one``: image ``[H, W, 3]`` -> scalar) as well
    as a batched one (``QualityModel.apply``: ``[B, H, W, 3]`` -> ``[B]``): the precision settings hold
    while ``fn`` is traced, ``variables`` and the inputs of the model's submodules are cast to the
    compute dtype inside (a no-op for variables :func:`prepare_variables` already cast), and the scores are returned as float32, so the
    gradient with respect to float32 pixels is float32.
    """
    if options.matmul == "default" and options.dtype == "float32" and not options.remat:
        return fn
    dtype = DTYPES[options.dtype]
    precision = MATMUL_PRECISIONS[options.matmul]

    @functools.wraps(fn)
    def wrapped(variables, pixels, *rest):
        with contextlib.ExitStack() as stack:
            if precision is not None:
                stack.enter_context(jax.default_matmul_precision(precision))
            if options.remat:
                stack.enter_context(remat_blocks(options.remat_pattern))
            if options.dtype != "float32":
                variables = cast_floats(variables, dtype)
                stack.enter_context(cast_submodule_inputs(dtype))
            return fn(variables, pixels, *rest).astype(jnp.float32)

    return wrapped


def donate_argnums(options: SpeedOptions, image_argnums: Sequence[int]) -> tuple[int, ...]:
    """``donate_argnums`` for ``jax.jit``: the image arguments when ``options.donate``, else none."""
    return tuple(image_argnums) if options.donate else ()


# --------------------------------------------------------------------------------------------------
# Rematerialisation of Flax submodules without touching the model's code.

_INSIDE_REMAT = contextvars.ContextVar("qcamo_inside_remat", default=False)


@contextlib.contextmanager
def remat_blocks(pattern: str = DEFAULT_REMAT_PATTERN, policy: Callable[..., bool] | None = None):
    """While active, every Flax submodule whose class name matches ``pattern`` is rematerialised.

    Uses :func:`flax.linen.intercept_methods` to route such a module's ``__call__`` through the lifted
    :func:`flax.linen.checkpoint` (:func:`jax.checkpoint`), so the model definition stays as it is.
    Blocks nested inside a rematerialised block are not wrapped again. Must be active while the model
    is *traced* (inside the jitted function), as :func:`wrap` does.

    Args:
      pattern: regular expression searched in the module's class name.
      policy: a :mod:`jax.checkpoint_policies` policy (default: save nothing inside a block).
    """
    regex = re.compile(pattern)

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__" or _INSIDE_REMAT.get() or not regex.search(type(context.module).__name__):
            return next_fun(*args, **kwargs)

        def inner(module, *inner_args):
            token = _INSIDE_REMAT.set(True)
            try:
                return module(*inner_args, **kwargs)
            finally:
                _INSIDE_REMAT.reset(token)

        return nn.checkpoint(inner, prevent_cse=True, policy=policy)(context.module, *args)

    with nn.intercept_methods(interceptor):
        yield


@contextlib.contextmanager
def cast_submodule_inputs(dtype: Any):
    """While active (at trace time), floating-point array arguments of every Flax *submodule* call are
    cast to ``dtype``; the top-level module's own inputs are left alone."""

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__" or not isinstance(context.module.parent, nn.Module):
            return next_fun(*args, **kwargs)
        cast = lambda a: a.astype(dtype) if isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jnp.floating) else a
        return next_fun(*[cast(a) for a in args], **kwargs)

    with nn.intercept_methods(interceptor):
        yield
