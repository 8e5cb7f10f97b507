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

from typing import Any, Mapping, NamedTuple, Protocol

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
    iterations; the host then encodes each output file. With ``devices`` the program runs data-parallel
    over a device mesh (:func:`qcamo_jax.sharding.data_parallel`); each image's result does not depend on
    the others in its batch.
    """

    def __init__(self, model, settings: Settings, *, devices: str | int | None = None):
        import jax
        import jax.numpy as jnp

        from qcamo_jax.attacks import api

        self.model = model
        self.settings = settings
        method, config = attack_config(settings)
        attack = api.attack_fn(attack_score_fn(model, settings), method, config, None)
        quantizer = _quantizer(model, settings)
        self.identity = f"{method}:{config!r}:{settings.quantize}:{quantizer_config(settings)!r}"

        self.traces = 0  # how many times the program was traced (compiled): one per image shape

        def program(variables, originals, targets, keys):
            self.traces += 1
            adv, res = attack(variables, originals.astype(jnp.float32), targets, keys)
            out, qres = quantizer(variables, originals, adv, targets)
            extras = {"budget": res.budget, "iterations": res.iterations}
            if qres is not None:
                extras.update(already_below_target=qres.already_below_target, within_limit=qres.within_limit)
            return out, extras

        self._variables = model.variables
        if devices is None:
            self._program = jax.jit(program)
        else:
            from qcamo_jax import sharding

            mesh = sharding.make_mesh(devices)
            self._variables = sharding.replicate(model.variables, mesh)
            self._program = sharding.data_parallel(program, mesh, in_axes=(None, 0, 0, 0))

    def __call__(self, images: np.ndarray, seeds: np.ndarray) -> list[Encoded]:
        import jax
        import jax.numpy as jnp

        images = np.asarray(images, np.uint8)
        keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds, jnp.uint32))
        targets = np.full((images.shape[0],), self.settings.target, np.float32)
        out, extras = self._program(self._variables, images, targets, keys)
        out = jax.tree.map(np.asarray, out)  # JpegCoefficients keeps its static fields
        extras = {k: np.asarray(v) for k, v in extras.items()}
        files = _encode_outputs(out, images, self.settings)
        return [Encoded(data, {k: v[i] for k, v in extras.items()}) for i, data in enumerate(files)]


def quantizer_config(settings: Settings):
    """The quantizer options of ``settings``: a :class:`~qcamo_jax.quantize.dct.DCTConfig` (``dct``), a
    :class:`~qcamo_jax.quantize.spatial.SpatialConfig` (``spatial``) or ``None`` (``none``).

    Both carry the re-encoder set (``--survive``), the margin and the distortion limits. A set that is
    one ImageMagick re-encoder is the paper's setting: the file is written as ImageMagick would write
    it at that quality (:meth:`~qcamo_jax.quantize.dct.DCTConfig.for_imagemagick`); any other set gets
    the quantizer's default written file (its measured best, docs/quantize.md) unless ``--quality``
    says otherwise.
    """
    from qcamo_jax.quantize.dct import DCTConfig
    from qcamo_jax.quantize.spatial import SpatialConfig

    o = dict(settings.attack_options)
    survive = settings.reencoder_set
    common = dict(margin=float(o.get("margin", DEFAULT_MARGIN)), survive=survive, max_l2=settings.max_l2,
                  min_psnr=settings.min_psnr)
    if settings.quantize == "none":
        return None
    if settings.quantize == "spatial":
        return SpatialConfig(**common)
    max_steps = int(o.get("max_steps", 1))
    members = tuple(survive)
    if len(members) == 1 and members[0].encoder == "imagemagick":
        return DCTConfig.for_imagemagick(settings.quality or members[0].quality, max_steps=max_steps, **common)
    if settings.quality is not None:
        return DCTConfig(quality=int(settings.quality), max_steps=max_steps, **common)
    return DCTConfig(max_steps=max_steps, **common)


def attack_score_fn(model, settings: Settings):
    """The score the attack minimises: the model's, or, for ``jpeg-pgd`` and for ``spatial`` with a
    re-encoder set, the mean over the file as saved and the set's differentiable round trips
    (:func:`qcamo_jax.quantize.survival.survival_score_fn`).

    The spatial quantizer can only choose between the two integers around each attacked pixel, so its
    attack must already hold after the set; the DCT quantizer moves coefficients along the set's own
    gradient and keeps the paper's plain attack (``pgd``).
    """
    from qcamo_jax.quantize import survival

    config = quantizer_config(settings)
    survive = settings.reencoder_set
    if settings.method == "jpeg-pgd" or (settings.quantize == "spatial" and len(survive)):
        kind = config.subsampling if settings.quantize == "dct" else "png"
        fn = survival.survival_score_fn(model.score_one, survive, kind, "mean")
        if settings.method == "jpeg-pgd" and settings.quantize == "dct":
            from qcamo_jax.quantize.jpeg_aware import jpeg_transform

            written = jpeg_transform(config)  # the attack sees the file it will be written as
            return lambda v, x: fn(v, written(x))
        return fn
    return model.score_one


def _quantizer(model, settings: Settings):
    """``q(variables, originals uint8 [B,H,W,3], adversarial float [B,H,W,3], targets [B]) -> (output, result)``.

    ``none``/``spatial`` give ``uint8 [B, H, W, 3]`` pixels; ``dct`` a batched
    :class:`qcamo_jax.jpeg.codec.JpegCoefficients`; ``result`` is the quantizer's
    :class:`~qcamo_jax.quantize.spatial.QuantizeResult` (``None`` for ``none``).
    """
    import jax.numpy as jnp

    config = quantizer_config(settings)
    if settings.quantize == "none":
        return lambda v, o, a, t: (jnp.clip(jnp.round(a), 0, 255).astype(jnp.uint8), None)
    if settings.quantize == "spatial":
        from qcamo_jax.quantize.spatial import quantize_spatial

        return lambda v, o, a, t: quantize_spatial(model.score_one, v, o, a, t, config)
    from qcamo_jax.quantize.dct import quantize_dct

    def dct(v, o, a, t):
        coeffs, _, res = quantize_dct(model.score_one, v, o, a, t, config)
        return coeffs, res

    return dct


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
