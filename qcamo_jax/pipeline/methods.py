"""What the settings of a run mean for the compiled program: which attack, which quantizer, which score.

Data contract: functions of a :class:`~qcamo_jax.pipeline.settings.Settings` (and a score function
``score_fn(variables, image float32 [H, W, 3] pixels 0-255) -> scalar``, model units 0-100) returning
configs of :mod:`qcamo_jax.attacks` and :mod:`qcamo_jax.quantize` or functions of
``(variables, originals uint8 [B, H, W, 3], adversarial float32 [B, H, W, 3], targets float32 [B])``.
Unknown attack options raise :class:`qcamo_jax.errors.QcamoError`. The engine
(:mod:`qcamo_jax.pipeline.engine`) jits what these return.
"""

from __future__ import annotations

from typing import Sequence

from qcamo_jax.errors import QcamoError
from qcamo_jax.pipeline.settings import DEFAULT_MARGIN, SEARCH_PRESETS, Settings


def search_preset(name: str):
    """The :class:`~qcamo_jax.attacks.config.SearchConfig` of a name in :data:`SEARCH_PRESETS`.

    Raises:
      QcamoError: an unknown name.
    """
    from qcamo_jax.attacks.config import SearchConfig

    presets = {"thorough": SearchConfig.thorough, "fast": SearchConfig, "paper": SearchConfig.paper}
    if name not in presets:
        raise QcamoError(f"unknown search {name!r}; known: {', '.join(SEARCH_PRESETS)}")
    return presets[name]()


def attack_config(settings: Settings):
    """``(attacks.api method name, config)`` for ``settings.method`` and ``settings.attack_options``.

    ``pgd`` and ``jpeg-pgd`` are the paper's attack: L2 PGD inside a search over the budget
    (:class:`qcamo_jax.attacks.config.SearchConfig`); ``jpeg-pgd`` differentiates through the re-encoder
    set's round trips (:func:`attack_score_fn`). Options: ``search`` (:data:`SEARCH_PRESETS`:
    ``thorough``, the default; ``fast``, the library's default :class:`SearchConfig`; the ``paper``'s
    procedure), ``steps`` (PGD steps per try),
    ``search_steps`` (tries), ``eps_max``, ``margin`` (go below ``T - margin``, attack and
    quantizer), ``eps`` (FGSM/I-FGSM budget), ``max_steps`` (DCT quantizer: largest change of a
    coefficient, in steps).
    """
    import dataclasses

    from qcamo_jax.attacks.config import FGSMConfig
    from qcamo_jax.attacks.fgsm import ifgsm_config

    o = dict(settings.attack_options)
    known = {"search", "steps", "search_steps", "eps_max", "margin", "eps", "max_steps"}
    if set(o) - known:
        raise QcamoError(f"unknown attack options {sorted(set(o) - known)}; known: {sorted(known)}")
    margin = float(o.get("margin", DEFAULT_MARGIN))
    if settings.method in ("pgd", "jpeg-pgd"):
        base = search_preset(o.get("search", SEARCH_PRESETS[0]))
        pgd_cfg = dataclasses.replace(base.pgd, steps=int(o.get("steps", base.pgd.steps)), margin=margin)
        eps_max = float(o.get("eps_max", base.eps_max))
        if settings.max_l2 is not None:  # a budget above the limit only leaves the quantizer small changes
            eps_max = min(eps_max, float(settings.max_l2))
        return "search", dataclasses.replace(base, pgd=pgd_cfg, eps_max=eps_max,
                                             bisection_steps=int(o.get("search_steps", base.bisection_steps)))
    if settings.method == "ifgsm":
        return "ifgsm", ifgsm_config(float(o.get("eps", 4.0)), o.get("steps"), margin=margin)
    return "fgsm", FGSMConfig(eps=float(o.get("eps", 4.0)), margin=margin)


def quantizer_config(settings: Settings):
    """The quantizer options of ``settings``: a :class:`~qcamo_jax.quantize.dct.DCTConfig` (``dct``), a
    :class:`~qcamo_jax.quantize.spatial.SpatialConfig` (``spatial``) or ``None`` (``none``).

    Both carry the re-encoder set (``--survive``), the margin and the distortion limits. A set that is
    one ImageMagick re-encoder is the paper's setting: the file is written as ImageMagick would write
    it at that quality (:meth:`~qcamo_jax.quantize.dct.DCTConfig.for_imagemagick`); any other set gets
    the quantizer's default written file (docs/quantize.md) unless ``--quality`` says otherwise.
    """
    from qcamo_jax.quantize.dct import DCTConfig, reach_steps
    from qcamo_jax.quantize.spatial import SpatialConfig

    o = dict(settings.attack_options)
    survive = settings.reencoder_set
    common = dict(margin=float(o.get("margin", DEFAULT_MARGIN)), survive=survive, max_l2=settings.max_l2,
                  min_psnr=settings.min_psnr)
    if settings.quantize == "none":
        return None
    if settings.quantize == "spatial":
        return SpatialConfig(**common)
    if "max_steps" in o:  # else the written file's default: 1 for ImageMagick alone, reach_steps for a set
        common["max_steps"] = int(o["max_steps"])
    members = tuple(survive)
    if len(members) == 1 and members[0].encoder == "imagemagick":
        return DCTConfig.for_imagemagick(settings.quality or members[0].quality, **common)
    if settings.quality is not None:
        common.setdefault("max_steps", reach_steps(int(settings.quality)))
        return DCTConfig(quality=int(settings.quality), **common)
    return DCTConfig(**common)


def attack_score_fn(score_fn, settings: Settings):
    """The score the attack minimises: ``score_fn``, or, for ``jpeg-pgd`` and for ``spatial`` with a
    re-encoder set, a reduction over the file as saved and the set's differentiable round trips
    (:func:`qcamo_jax.quantize.survival.survival_score_fn`).

    The spatial quantizer only chooses between the two integers around each attacked pixel, so its
    attack must already hold after *every* member: its score is the worst (max) over the set, so that
    the budget search does not stop while one re-encoder is still above T (with the mean, a new-user
    pass saw the search stop at budget 58 with the q75 round trip 11 points above T). The DCT
    quantizer scales the attack's change until the file holds after every member (or, in the
    ImageMagick setting, moves coefficients along the set's gradient), so ``pgd`` + ``dct`` keeps the
    paper's plain attack. For ``jpeg-pgd`` + ``dct`` the attack sees the written file (its differentiable JPEG)
    and then the mean over the set's round trips of it.
    """
    from qcamo_jax.quantize import survival

    config = quantizer_config(settings)
    survive = settings.reencoder_set
    if settings.method == "jpeg-pgd" or (settings.quantize == "spatial" and len(survive)):
        kind = config.subsampling if settings.quantize == "dct" else "png"
        fn = survival.survival_score_fn(score_fn, survive, kind, "worst" if settings.quantize == "spatial" else "mean")
        if settings.method == "jpeg-pgd" and settings.quantize == "dct":
            from qcamo_jax.quantize.jpeg_aware import jpeg_transform

            written = jpeg_transform(config)
            return lambda v, x: fn(v, written(x))
        return fn
    return score_fn


def quantizer(score_fn, settings: Settings):
    """``q(variables, originals, adversarial, targets) -> (output, result)`` for ``settings.quantize``.

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

        return lambda v, o, a, t: quantize_spatial(score_fn, v, o, a, t, config)
    from qcamo_jax.quantize.dct import quantize_dct

    def dct(v, o, a, t):
        coeffs, _, res = quantize_dct(score_fn, v, o, a, t, config)
        return coeffs, res

    return dct


def attack_evaluations(method: str, config) -> int:
    """The most model evaluations an :mod:`qcamo_jax.attacks.api` method makes per image (``config``: its config)."""
    if method == "search":  # the clean score, then per try PGD steps + its final score, then refinement
        return 1 + config.bisection_steps * (config.pgd.steps + 1) + max(0, config.refine_steps)
    if method in ("pgd", "ifgsm"):
        return config.steps + 1
    return 2  # fgsm: one gradient, one score


def quantizer_evaluations(settings: Settings, shape: Sequence[int]) -> int:
    """The most model evaluations of the quantizer per image: one gradient plus the search's candidates
    (:func:`qcamo_jax.quantize.search.max_evaluations`; the ITP search usually stops well before). The
    DCT quantizer's ``candidates="attack"`` (the default under a set) skips the gradient unless the
    attack left the image unchanged (``QuantizeResult.gradients``), and may add a second search, over the
    bracket candidates (:func:`qcamo_jax.quantize.dct.quantize_dct_one`)."""
    quantize = settings.quantize
    if quantize == "none":
        return 0
    from qcamo_jax.quantize.search import max_evaluations

    h, w = int(shape[0]), int(shape[1])
    n = h * w * 3 if quantize == "spatial" else 3 * 64 * (-(-h // 8)) * (-(-w // 8))
    config = quantizer_config(settings)
    rescue = quantize == "dct" and config.candidates == "attack" and config.bracket_rescue
    return (1 + max_evaluations(n)) * (2 if rescue else 1)
