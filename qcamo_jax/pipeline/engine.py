"""The engine: ``uint8`` images and per-image seeds in, encoded adversarial files out.

Data contract: an :class:`Engine` is called as ``engine(images uint8 [B, H, W, 3], seeds int [B])`` and
returns ``B`` :class:`Encoded` (file bytes + JSON-able extras such as ``budget`` and ``iterations``);
output ``i`` depends only on image ``i`` and seed ``i``. Its ``identity`` string changes whenever its
outputs would (it enters :func:`qcamo_jax.pipeline.settings.settings_hash`). The real one,
:class:`AttackEngine`, runs :mod:`qcamo_jax.attacks` then :mod:`qcamo_jax.quantize` in one jitted
program per image shape (pixels in 0-255 float32 inside, targets on the 0-100 score scale) and
encodes each output on the host: ``.png`` pixels, or a ``.jpg`` holding exactly the quantized
coefficients. Unknown attack options raise :class:`qcamo_jax.errors.QcamoError`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Protocol, Sequence

import numpy as np

from qcamo_jax.errors import QcamoError
from qcamo_jax.pipeline.outputs import encode_png
from qcamo_jax.pipeline.settings import DEFAULT_MARGIN, Settings

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


def attack_config(settings: Settings):
    """``(attacks.api method name, config)`` for ``settings.method`` and ``settings.attack_options``.

    ``pgd`` and ``jpeg-pgd`` are the paper's attack: L2 PGD inside a bisection over the budget
    (:class:`qcamo_jax.attacks.config.SearchConfig`); ``jpeg-pgd`` differentiates through a simulated
    JPEG round trip at ``settings.quality``. Options: ``steps`` (PGD steps per try), ``search_steps``
    (bisection tries), ``eps_max``, ``margin`` (go below ``T - margin``, attack and quantizer), ``eps``
    (FGSM/I-FGSM budget), ``max_steps`` (DCT quantizer: largest change of a coefficient, in steps).
    """
    from qcamo_jax.attacks.config import FGSMConfig, PGDConfig, SearchConfig
    from qcamo_jax.attacks.fgsm import ifgsm_config

    o = dict(settings.attack_options)
    known = {"steps", "search_steps", "eps_max", "margin", "eps", "max_steps"}
    if set(o) - known:
        raise QcamoError(f"unknown attack options {sorted(set(o) - known)}; known: {sorted(known)}")
    margin = float(o.get("margin", DEFAULT_MARGIN))
    if settings.method in ("pgd", "jpeg-pgd"):
        pgd_cfg = PGDConfig(steps=int(o.get("steps", 10)), margin=margin)
        return "search", SearchConfig(pgd=pgd_cfg, eps_max=float(o.get("eps_max", 2000.0)),
                                      bisection_steps=int(o.get("search_steps", 7)))
    if settings.method == "ifgsm":
        return "ifgsm", ifgsm_config(float(o.get("eps", 4.0)), o.get("steps"), margin=margin)
    return "fgsm", FGSMConfig(eps=float(o.get("eps", 4.0)), margin=margin)


class AttackEngine:
    """The real :class:`Engine`: attack (:mod:`qcamo_jax.attacks`) then quantizer (:mod:`qcamo_jax.quantize`).

    One jitted program per image shape maps ``uint8 [B, H, W, 3]`` originals, targets and per-image
    keys to the quantized output (pixels, or JPEG coefficients for ``dct``) plus per-image budget and
    iterations; the host then encodes each output file. Inside, the images run one after the other
    (``lax.map`` of the batched attack at batch size 1), so an image's output bytes depend neither on
    the batch size nor on the other images of its batch (``tests/test_batch_invariance.py``). With
    ``devices`` the program runs data-parallel over a device mesh
    (:func:`qcamo_jax.sharding.data_parallel`).
    """

    def __init__(self, model, settings: Settings, *, devices: str | int | None = None):
        import jax
        import jax.numpy as jnp

        from qcamo_jax.attacks import api

        self.model = model
        self.settings = settings
        method, config = attack_config(settings)
        transform = None
        if settings.method == "jpeg-pgd":
            from qcamo_jax.quantize.dct import DCTConfig
            from qcamo_jax.quantize.jpeg_aware import jpeg_transform

            # the differentiable round trip of the reference re-encoder (ImageMagick-like)
            transform = jpeg_transform(DCTConfig.for_imagemagick(settings.quality))
        #: Host listener of the compiled program: ``compile_start(shape, batch)`` before a new shape runs,
        #: ``units(n)`` as it runs (see :mod:`qcamo_jax.pipeline.progress`); ``None``: nobody listens.
        self.listener = None
        self._method, self._config = method, config
        self._seen_shapes: set[tuple[int, ...]] = set()
        score_one = _reporting(model.score_one, self._unit)
        attack = api.attack_fn(score_one, method, config, transform)
        quantizer = _quantizer(model, settings, score_one)
        self.identity = f"{method}:{config!r}:{settings.quantize}:{settings.quality}"

        self.traces = 0  # how many times the program was traced (compiled): one per image shape

        def one(variables, original, target, key):
            adv, res = attack(variables, original[None].astype(jnp.float32), target[None], key[None])
            out = quantizer(variables, original[None], adv, target[None])
            return jax.tree.map(lambda a: a[0], out), {"budget": res.budget[0], "iterations": res.iterations[0]}

        def program(variables, originals, targets, keys):
            self.traces += 1
            # One image at a time (lax.map), not vmap: XLA picks convolution algorithms by shape, so
            # the batch size would change an image's arithmetic (scores moved in the 7th digit).
            # Every image runs the same batch-of-one computation, whatever the batch it came in.
            return jax.lax.map(lambda a: one(variables, *a), (originals, targets, keys))

        self._variables = model.variables
        self._reporters = 1  # devices the batch is split over (this process's)
        if devices is None:
            self._program = jax.jit(program)
        else:
            from qcamo_jax import sharding

            mesh = sharding.make_mesh(devices)
            self._reporters = sharding.local_device_count(mesh)
            self._variables = sharding.replicate(model.variables, mesh)
            self._program = sharding.data_parallel(program, mesh, in_axes=(None, 0, 0, 0))

    def __call__(self, images: np.ndarray, seeds: np.ndarray) -> list[Encoded]:
        import jax
        import jax.numpy as jnp

        images = np.asarray(images, np.uint8)
        keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds, jnp.uint32))
        targets = np.full((images.shape[0],), self.settings.target, np.float32)
        if images.shape not in self._seen_shapes:  # the first call of a shape compiles it
            self._seen_shapes.add(images.shape)
            if self.listener is not None:
                self.listener.compile_start(images.shape[1:], images.shape[0])
        out, extras = self._program(self._variables, images, targets, keys)
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
        return images * (_attack_evaluations(self._method, self._config)
                         + _quantizer_evaluations(self.settings.quantize, shape))


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


def _attack_evaluations(method: str, config) -> int:
    """The most model evaluations an :mod:`qcamo_jax.attacks.api` method makes per image (``config``: its config)."""
    if method == "search":  # the clean score, then per try PGD steps + its final score, then refinement
        return 1 + config.bisection_steps * (config.pgd.steps + 1) + max(0, config.refine_steps)
    if method in ("pgd", "ifgsm"):
        return config.steps + 1
    return 2  # fgsm: one gradient, one score


def _quantizer_evaluations(quantize: str, shape: Sequence[int]) -> int:
    """Model evaluations of the quantizer per image: one gradient, the full candidate, the bisection."""
    if quantize == "none":
        return 0
    from qcamo_jax.quantize.spatial import bisection_steps

    h, w = int(shape[0]), int(shape[1])
    n = h * w * 3 if quantize == "spatial" else 3 * 64 * (-(-h // 8)) * (-(-w // 8))
    return 2 + bisection_steps(n + 1)


def _quantizer(model, settings: Settings, score_fn=None):
    """``q(variables, originals uint8 [B,H,W,3], adversarial float [B,H,W,3], targets [B]) -> output pytree``.

    ``none``/``spatial`` give ``uint8 [B, H, W, 3]`` pixels; ``dct`` a batched
    :class:`qcamo_jax.jpeg.codec.JpegCoefficients` made for the reference re-encoder (ImageMagick-like:
    IFAST DCT up to quality 90, ISLOW above; 4:4:4).
    """
    import jax.numpy as jnp

    score_fn = score_fn or model.score_one
    margin = float(dict(settings.attack_options).get("margin", DEFAULT_MARGIN))
    if settings.quantize == "none":
        return lambda v, o, a, t: jnp.clip(jnp.round(a), 0, 255).astype(jnp.uint8)
    if settings.quantize == "spatial":
        from qcamo_jax.quantize.spatial import SpatialConfig, quantize_spatial

        return lambda v, o, a, t: quantize_spatial(score_fn, v, o, a, t, SpatialConfig(margin=margin))[0]
    from qcamo_jax.quantize.dct import DCTConfig, quantize_dct

    config = DCTConfig.for_imagemagick(settings.quality, max_steps=int(dict(settings.attack_options).get("max_steps", 1)),
                                       margin=margin)
    return lambda v, o, a, t: quantize_dct(score_fn, v, o, a, t, config)[0]


def _encode_outputs(out, originals: np.ndarray, settings: Settings) -> list[bytes]:
    """Host side: the output file bytes of each image (PNG pixels, or a JPEG holding exactly the coefficients)."""
    if settings.quantize in ("none", "spatial"):
        return [encode_png(out[i]) for i in range(originals.shape[0])]
    from qcamo_jax.jpeg import io as jio
    from qcamo_jax.quantize.dct import unbatch

    return [jio.jpeg_bytes(unbatch(out, i)) for i in range(originals.shape[0])]


def make_engine(model, settings: Settings, *, devices: str | int | None = None, batch_size: int = 4) -> Engine:
    """Build the attack + quantizer engine for ``settings`` (see :class:`AttackEngine`)."""
    return AttackEngine(model, settings, devices=devices)
