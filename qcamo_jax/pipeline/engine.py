"""The engine: ``uint8`` images and per-image seeds in, encoded adversarial files out.

Data contract: an :class:`Engine` is called as ``engine(images uint8 [B, H, W, 3], seeds int [B])`` and
returns ``B`` :class:`Encoded` (file bytes + JSON-able extras such as ``budget`` and ``iterations``);
output ``i`` depends only on image ``i`` and seed ``i``. Its ``identity`` string changes whenever its
outputs would (it enters :func:`qcamo_jax.pipeline.settings.settings_hash`). The real one,
:class:`AttackEngine`, runs :mod:`qcamo_jax.attacks` then :mod:`qcamo_jax.quantize` in one jitted
program per image shape (pixels in 0-255 float32 inside, targets on the 0-100 score scale) and
encodes each output on the host: ``.png`` pixels, or a ``.jpg`` holding exactly the quantized
coefficients. What the settings mean (attack, quantizer, score) is :mod:`.methods`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Protocol, Sequence

import numpy as np

from qcamo_jax.pipeline import methods
from qcamo_jax.pipeline.methods import attack_config  # noqa: F401 (public here too)
from qcamo_jax.pipeline.outputs import encode_png
from qcamo_jax.pipeline.settings import Settings

class Encoded(NamedTuple):
    """One attacked image, encoded.

    Attributes:
      data: the bytes of the output file (``.jpg`` or ``.png``).
      extras: attack/quantizer details for the report (e.g. ``budget``, ``iterations``).
    """

    data: bytes
    extras: Mapping[str, Any]


class Engine(Protocol):
    """Turns a batch of images into encoded adversarial files.

    ``engine(images uint8 [B, H, W, 3], seeds int [B]) -> list of B Encoded``. ``identity`` is a string
    that changes whenever the outputs would (it enters the resume check). Output ``i`` must depend only
    on image ``i`` and seed ``i``.
    """

    identity: str

    def __call__(self, images: np.ndarray, seeds: np.ndarray) -> list[Encoded]: ...


class AttackEngine:
    """The real :class:`Engine`: attack (:mod:`qcamo_jax.attacks`) then quantizer (:mod:`qcamo_jax.quantize`).

    One jitted program per image shape maps ``uint8 [B, H, W, 3]`` originals, targets and per-image
    keys to the quantized output (pixels, or JPEG coefficients for ``dct``) plus per-image budget and
    iterations; the host then encodes each output file. Inside, the images run one after the other
    (``lax.map`` of the batched attack at batch size 1), so an image's output bytes depend neither on
    the batch size nor on the other images of its batch (``tests/test_batch_invariance.py``). That is
    the default on the CPU, where batching buys little; on a GPU/TPU (``batch_invariant=False``, the
    default there) the images of a batch run together (``vmap``), results may then differ in the last
    digits with the batch size, and the batch size enters :attr:`identity` so that ``--resume`` with
    another batch size recomputes rather than mixes. With
    ``devices`` the program runs data-parallel over a device mesh
    (:func:`qcamo_jax.sharding.data_parallel`).
    """

    def __init__(self, model, settings: Settings, *, devices: str | int | None = None, batch_size: int = 4,
                 batch_invariant: bool | None = None):
        import jax

        self.model = model
        self.settings = settings
        method, config = methods.attack_config(settings)
        #: Host listener of the compiled program: ``compile_start(shape, batch)`` and ``compile_end(shape,
        #: batch)`` around a new shape's compilation, ``units(n)`` as it runs (see
        #: :mod:`qcamo_jax.pipeline.progress`); ``None``: nobody listens.
        self.listener = None
        self._method, self._config = method, config
        self.identity = f"{method}:{config!r}:{settings.quantize}:{methods.quantizer_config(settings)!r}"
        self.traces = 0  # how many times a program was traced (compiled): one per image shape
        if batch_invariant is None:
            batch_invariant = jax.default_backend() == "cpu"
        self.batch_invariant = bool(batch_invariant)
        if not self.batch_invariant:
            # vmap keeps an accelerator busy, but XLA then picks convolution algorithms for the batch
            # shape: outputs may differ with the batch size, so it enters the identity and a --resume
            # with another batch size recomputes instead of mixing.
            self.identity += f":vmap-batch-{int(batch_size)}"
        self._variables = model.variables
        self._reporters = 1  # devices the batch is split over (this process's)
        self._mesh = None
        if devices is not None:
            from qcamo_jax import sharding

            self._mesh = sharding.make_mesh(devices)
            self._reporters = sharding.local_device_count(self._mesh)
            self._variables = sharding.replicate(model.variables, self._mesh)
        # Every process of a multi-process run compiles the same program, whoever listens (and reports units).
        self._always_report = jax.process_count() > 1
        self._programs: dict[bool, Callable] = {}
        self._compiled: set[tuple[tuple[int, ...], bool]] = set()

    def _program(self, report_units: bool) -> Callable:
        """The jitted (or data-parallel) program, with or without the unit callbacks (built once each).

        Without them the program has no host callback, so JAX's persistent compilation cache can keep it
        (:mod:`qcamo_jax.compile_cache`; a program with one is never written there). The numbers are the
        same either way: the callback does not touch them.
        """
        if report_units in self._programs:
            return self._programs[report_units]
        import jax
        import jax.numpy as jnp

        from qcamo_jax.attacks import api

        settings = self.settings
        score_one = _reporting(self.model.score_one, self._unit) if report_units else self.model.score_one
        attack = api.attack_fn(methods.attack_score_fn(score_one, settings), self._method, self._config, None)
        quantizer = methods.quantizer(score_one, settings)

        def one(variables, original, target, key):
            adv, res = attack(variables, original[None].astype(jnp.float32), target[None], key[None])
            out, qres = quantizer(variables, original[None], adv, target[None])
            extras = {"budget": res.budget, "iterations": res.iterations}
            if qres is not None:
                extras.update(already_below_target=qres.already_below_target, within_limit=qres.within_limit)
            return jax.tree.map(lambda a: a[0], (out, extras))

        def program(variables, originals, targets, keys):
            self.traces += 1
            if not self.batch_invariant:
                return jax.vmap(lambda *a: one(variables, *a))(originals, targets, keys)
            # One image at a time (lax.map), not vmap: XLA picks convolution algorithms by shape, so
            # the batch size would change an image's arithmetic (scores moved in the 7th digit).
            # Every image runs the same batch-of-one computation, whatever the batch it came in.
            return jax.lax.map(lambda a: one(variables, *a), (originals, targets, keys))

        if self._mesh is None:
            run = jax.jit(program)
        else:
            from qcamo_jax import sharding

            run = sharding.data_parallel(program, self._mesh, in_axes=(None, 0, 0, 0))
        self._programs[report_units] = run
        return run

    def __call__(self, images: np.ndarray, seeds: np.ndarray) -> list[Encoded]:
        import jax
        import jax.numpy as jnp

        images = np.asarray(images, np.uint8)
        keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds, jnp.uint32))
        targets = np.full((images.shape[0],), self.settings.target, np.float32)
        listener = self.listener
        # Units only when someone shows them (a bar on a terminal, --log-json): see _program.
        report_units = self._always_report or bool(listener is not None and getattr(listener, "wants_units", True))
        program = self._program(report_units)
        key = (images.shape, report_units)
        if key not in self._compiled:  # the first call of a shape compiles it: ahead, to time it exactly
            self._compiled.add(key)
            if listener is not None:
                listener.compile_start(images.shape[1:], images.shape[0])
            args = (self._variables, images, targets, keys)
            if self._mesh is None:
                program.lower(*args).compile()  # the jitted call below reuses it
            elif not self._always_report:
                program.compile(*args)
            # Multi-process: placing a batch is a collective, and the processes' batches of one call may
            # differ in shape (the last one), so no process compiles apart; its first unit ends the compile.
            if listener is not None and not self._always_report:
                listener.compile_end(images.shape[1:], images.shape[0])
        out, extras = program(self._variables, images, targets, keys)
        out = jax.tree.map(np.asarray, out)  # JpegCoefficients keeps its static fields
        extras = {k: np.asarray(v) for k, v in extras.items()}
        files = _encode_outputs(out, images, self.settings)
        return [Encoded(data, {k: v[i] for k, v in extras.items()}) for i, data in enumerate(files)]

    def _unit(self) -> None:
        listener = self.listener
        if listener is not None:
            listener.units(1)

    def expected_units(self, shape: Sequence[int], batch: int) -> int:
        """How many units one call on ``batch`` images of ``shape`` reports at most (its model evaluations).

        A unit is one model evaluation of one image (the program runs the images one after the other;
        a batch split over a mesh is padded to a multiple of its devices). The count is the most the
        attack and the quantizer can make; early stopping makes fewer.
        """
        images = -(-int(batch) // self._reporters) * self._reporters
        return images * (methods.attack_evaluations(self._method, self._config)
                         + methods.quantizer_evaluations(self.settings, shape))


def _reporting(score_fn, unit: Callable[[], None]):
    """``score_fn`` that reports one unit to the host (``unit()``) each time the program evaluates it.

    The callback takes no argument on purpose: under ``vmap`` a callback with batched arguments is
    unrolled into one call per batch element, while this one stays a single call per evaluation. It
    does not touch the score, so the numbers are those of ``score_fn``.
    """
    import jax

    def score(variables, image):
        jax.debug.callback(unit)
        return score_fn(variables, image)

    return score


def _encode_outputs(out, originals: np.ndarray, settings: Settings) -> list[bytes]:
    """Host side: the output file bytes of each image (PNG pixels, or a JPEG holding exactly the coefficients)."""
    if settings.quantize in ("none", "spatial"):
        return [encode_png(out[i]) for i in range(originals.shape[0])]
    from qcamo_jax.jpeg import io as jio
    from qcamo_jax.batching import unbatch

    return [jio.jpeg_bytes(unbatch(out, i)) for i in range(originals.shape[0])]


def make_engine(model, settings: Settings, *, devices: str | int | None = None, batch_size: int = 4) -> Engine:
    """Build the attack + quantizer engine for ``settings`` (see :class:`AttackEngine`)."""
    return AttackEngine(model, settings, devices=devices, batch_size=batch_size)
