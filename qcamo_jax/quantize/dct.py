"""DCT-domain quantizer: integer JPEG coefficients that stay adversarial after JPEG re-compression.

Bonnet, Furon, Bas, "Fooling an Automatic Image Quality Estimator", MediaEval 2020 (eqs. 6-7); the
optional safety margin follows the authors' later code (benoitbonnet/rescaling_icip).

Data contract: ``originals`` ``uint8 [B, H, W, 3]`` RGB pixels, ``adversarial`` ``float32 [B, H, W, 3]``
pixels in [0, 255] (an attack's output), ``targets`` ``float32 [B]``. Coefficients are
a batched :class:`qcamo_jax.jpeg.codec.JpegCoefficients` (Y, Cb, Cr; blocks in natural order ``[v, u]``) in
quantization steps, i.e. the integers stored in the JPEG file; ``Hb = ceil(H / 8)``.

The re-encoder set (issue 12). The file must stay adversarial as saved and after every member of
``config.survive`` (:class:`qcamo_jax.jpeg.reencoders.ReencoderSet`, default ``common``): each search
step decodes the candidate as libjpeg-turbo does, re-encodes it with every member's DCT, sampling and
quality, decodes again and scores all versions in one batch; the loss is the worst of them. The written
file's own quality, DCT and sampling are free parameters (:class:`DCTConfig`).

The direction (``DCTConfig.candidates``). The paper moves each coefficient against ``g``, the gradient
of the loss at the attacked image (``"gradient"``; under a set, the gradient of the mean or worst of
the differentiable round trips; :meth:`DCTConfig.for_imagemagick`, the paper's setting, keeps it). The
default of :class:`DCTConfig` is ``"attack"``: the same rule with
``g = -2 u``, ``u`` the attack's own change of the coefficients, so the candidates are the attack
scaled by ``lambda`` (``z_j = round((c_j + lambda u_j) / Delta_j)``; ``lambda = 1`` is the attacked
image) and the search finds the smallest scaling that holds after every member. The attack's many
steps find a far shorter way down than one linear step along a gradient: on photos at 384x512,
``common``, it gave 3.3-3.4 dB more PSNR at T = 30 and T = 50 at the same real-library success
(docs/quantize.md, "Direction"), and it needs no gradient pass through the set (except for an image
the attack left unchanged: the gradient is then the only direction there is). Where scaling fails or
goes past the attacked image, the ``"bracket"`` candidates are tried too (:func:`quantize_dct_one`).

The method. The image will be judged after a JPEG encoder at quality Q (the MediaEval setting:
ImageMagick ``-quality 90``: 4:4:4, IFAST DCT). So we write a JPEG ourselves, at Q, with coefficients
chosen so that (i) decoding it gives an adversarial image and (ii) re-encoding its decoded pixels by
that encoder gives back the same coefficients. Per coefficient ``j`` of the original, with ``c_j`` the
unquantized value the target encoder computes (its own fixed-point forward DCT, emulated bit-exactly),
``Delta_j`` the quantization step and ``g_j = dL/dc_j`` the gradient of the loss at the attacked image,
the stored integer ``z_j`` minimises

    (z_j Delta_j - c_j)^2 + lambda g_j z_j Delta_j    ->    z_j = round(c_j / Delta_j - lambda g_j / (2 Delta_j)),

clamped to ``max_steps`` steps from the plain-JPEG value ``z0_j`` (what the encoder would write for the
original). ``lambda = 0`` is plain JPEG. As ``lambda`` grows, coefficient ``j`` leaves ``z0_j`` (one step
towards lower loss) at its switching point ``lambda_j = 2 Delta_j (1/2 - s_j r_j) / |g_j|`` with
``s_j = -sign(g_j)`` and ``r_j = c_j / Delta_j - z0_j``. The switching points are sorted once and a
search over how many coefficients moved (:func:`qcamo_jax.quantize.search.search_flips`: plain JPEG
first, then all moves, then a bisection) finds the smallest ``lambda`` whose *true* loss - the model
run on the exactly decoded image (libjpeg's integer IDCT and colour conversion, bit-exact) and on its
exact re-encodings - is below ``-margin``. Because the distortion term is measured in the orthonormal DCT domain it equals the
YCbCr pixel-domain squared error.

A re-encoder with the same tables keeps the coefficients: decoding then re-encoding moves each by the
pixel rounding noise only, well below ``Delta / 2`` at Q = 90 (rates in docs/quantize.md).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from qcamo_jax.batching import map_images, unbatch  # noqa: F401 (unbatch: re-exported)
from qcamo_jax.jpeg.io import write_jpeg  # noqa: F401 (re-exported: writes a quantize_dct output)
from qcamo_jax.jpeg import codec, reencoders, tables
from qcamo_jax.quantize import survival
from qcamo_jax.quantize.dct_plan import (CANDIDATES, DCT_METHODS, DCTPlan, plan_candidate,  # noqa: F401 (re-exported)
                                        plan_dct, plan_prediction)
from qcamo_jax.quantize.search import RTOL, limit_flips, search_flips
from qcamo_jax.quantize.spatial import QuantizeResult, ScoreFn


class DCTConfig(NamedTuple):
    """Options of :func:`quantize_dct` (hashable: a static option under ``jit``).

    The written file (``quality``, ``dct_method``, ``subsampling``) is a free parameter: it is our own
    JPEG, decoded by the viewer and by every re-encoder of ``survive``. The candidates follow the
    attack's own change (``candidates="attack"``, module docstring). The defaults (quality 100,
    islow, 4:4:4, ``max_steps=40``) were chosen by ``scripts/written_quality.py``
    with the real libraries (docs/quantize.md, "The written file" and "Reach"): at quality 100 the
    plain file is nearly lossless, so the only distortion is the adversarial change itself, and 40
    unit steps reach as far as 5 steps of the quality-90 tables (:func:`reach_steps`). On 5 photos at
    384x512, T = 50, ``common``, with the gradient rule: every one below T after every member, mean
    PSNR 38.0 dB against 36.4 at quality 90 with 5 steps (one photo of the 5 lost 2 dB, the others
    gained 1.6-3.8 dB); the attack's direction added 3.3-3.4 dB ("Direction"). The file is larger
    than a quality-90 JPEG (every coefficient kept at step 1).

    Attributes:
      quality: JPEG quality factor of the written file (its IJG quantization tables).
      dct_method: the DCT of the written file's plain encoding (the ``lambda = 0`` point): ``"islow"``,
        or ``"ifast"`` to make the file what ImageMagick at quality <= 90 writes (so that IM keeps it).
      subsampling: the written file's sampling, ``"444"`` or ``"420"``; ImageMagick keeps it when it
        re-encodes the file.
      max_steps: largest change of a coefficient, in steps of the written table, from the plain value
        (:func:`reach_steps` gives the measured bound for another quality).
      margin: required safety margin: success means every score ``< target - margin``.
      candidates: ``"attack"`` (default) - each coefficient moves from the plain-JPEG value along the
        attack's change ``u`` scaled by ``lambda`` (up to ``max_steps``); no gradient is computed.
        ``"gradient"`` - the paper's rule: along ``-g`` (up to ``max_steps``); the attack enters
        through ``g`` only (the ImageMagick setting, :meth:`for_imagemagick`). ``"bracket"`` - the spatial
        quantizer's rule in the DCT domain: each coefficient is one of the two integers bracketing the
        *attacked* image's coefficient ``(c + u) / Delta`` (clamped to ``max_steps`` from plain JPEG);
        ``lambda = 0`` takes the end nearer the original.
      survive: :class:`~qcamo_jax.jpeg.reencoders.ReencoderSet` the file must stay adversarial after;
        success is decided on the worst score over the file as saved and every member's exact round
        trip (default: the ``common`` profile).
      gradient: ``"worst"`` or ``"mean"``: which differentiable loss over the set gives ``g``
        (``"gradient"`` candidates only).
      bracket_rescue: with ``"attack"`` candidates, also search the bracket ones where scaling failed
        or went past the attacked image, keeping the lower L2 (:func:`quantize_dct_one`).
      max_l2: largest accepted L2 of the decoded output minus the original (pixel units), or ``None``.
      min_psnr: smallest accepted PSNR of the decoded output against the original (dB), or ``None``.
      search, search_rtol: the candidate search, as in :class:`~qcamo_jax.quantize.spatial.SpatialConfig`.
    """

    quality: int = 100
    dct_method: str = "islow"
    subsampling: str = "444"
    max_steps: int = 40
    margin: float = 0.0
    candidates: str = "attack"
    survive: reencoders.ReencoderSet = reencoders.DEFAULT
    gradient: str = "mean"
    bracket_rescue: bool = True
    max_l2: float | None = None
    min_psnr: float | None = None
    search: str = "itp"
    search_rtol: float = RTOL

    @classmethod
    def for_imagemagick(cls, quality: int = 90, **options) -> "DCTConfig":
        """The paper's setting: the file is made for ImageMagick's ``convert -quality Q`` alone.

        IFAST DCT up to quality 90, ISLOW above (coders/jpeg.c), 4:4:4 (what IM writes from a PNG at
        Q >= 90, and keeps when it re-encodes a 4:4:4 JPEG); ``survive`` = ImageMagick at ``Q``;
        ``max_steps=1`` and ``candidates="gradient"`` as the paper (one encoder that keeps the
        coefficients needs no more reach).
        """
        quality = int(quality)
        options.setdefault("max_steps", 1)
        options.setdefault("candidates", "gradient")
        options.setdefault("survive", reencoders.ReencoderSet((reencoders.reencoder("imagemagick", quality),)))
        return cls(quality=quality, dct_method="ifast" if quality <= 90 else "islow", subsampling="444", **options)


def reach_steps(quality: int) -> int:
    """Step bound at ``quality`` that reaches about as far as 5 steps of the quality-90 tables.

    IJG scaling (:func:`qcamo_jax.jpeg.tables.quality_scaling`, libjpeg ``jcparam.c``): table entries
    are proportional to ``200 - 2Q`` for ``Q >= 50`` and to ``5000 / Q`` below, then clamped to >= 1
    (so quality 100 is all ones). Five quality-90 steps (scale 20) is the reach measured to survive libjpeg-turbo 4:2:0 q75
    (docs/quantize.md, "Reach"); the bound is ``round(100 / scale)`` in ``[1, 40]``, e.g. 90 -> 5,
    95 -> 10, 100 -> 40 (scale taken as 2.5 there: the entries are 1, not 0).

    Args:
      quality: JPEG quality factor, 1-100.

    Returns:
      int, the ``max_steps`` for a file written at ``quality``.
    """
    scale = tables.quality_scaling(int(quality))
    return int(np.clip(round(100.0 / max(scale, 2.5)), 1, 40))


def quantize_dct_one(
    score_fn: ScoreFn, variables: Mapping[str, Any], original: jax.Array, adversarial: jax.Array, target: jax.Array,
    config: DCTConfig = DCTConfig(),
):
    """Quantize one image in the DCT domain (see module docstring).

    The plain JPEG (zero added change) is scored first and returned when it already meets the target
    under the whole set; otherwise :func:`qcamo_jax.quantize.search.search_flips` over the switching
    points, capped by the distortion limit (:func:`qcamo_jax.quantize.search.limit_flips`).

    Where the ``"attack"`` candidates failed or had to scale past the attacked image (``lambda > 1``),
    the ``"bracket"`` ones (the attacked image, each coefficient rounded towards the attack's change)
    are searched too if their farthest candidate holds, and the successful result with the lower L2 is
    kept (``evaluations`` counts every candidate scored). A change that is small against the rounding to
    integers is lost by rounding to nearest and only a large scaling holds: a 64x64 photo 2 points above
    T gave L2 2395 (21 dB PSNR) with the scaling, L2 87 (50 dB) with the bracket.

    Returns:
      ``(coefficients JpegCoefficients, decoded uint8 [H, W, 3], QuantizeResult of scalars)``.
    """
    plan = plan_dct(score_fn, variables, original, adversarial, config)
    coeffs, decoded, result = _search(score_fn, variables, original, target, plan, config)
    if config.candidates != "attack" or not config.bracket_rescue:
        return coeffs, decoded, result
    bracket = config._replace(candidates="bracket")

    def rescue():
        # Rounded towards the attack's change (no gradient pass). Its farthest candidate is scored
        # first: where even that fails (on 384x512 photos the attacked image does not hold after the
        # re-encoders) the rescue costs that one candidate.
        b_plan = plan_dct(score_fn, variables, original, adversarial, bracket, gradient=-plan.direction * plan.abs_g)
        farthest_loss, _ = _candidates(score_fn, variables, original, target, b_plan, bracket)[1](b_plan.n_active)

        def search():
            b_coeffs, b_decoded, b = _search(score_fn, variables, original, target, b_plan, bracket)
            better = b.success & (~result.success | (b.l2 < result.l2))
            pick = lambda x, y: jax.tree.map(lambda u, v: jnp.where(better, u, v), x, y)  # noqa: E731
            coeffs_, decoded_, res = pick((b_coeffs, b_decoded, b), (coeffs, decoded, result))
            return coeffs_, decoded_, res._replace(evaluations=result.evaluations + b.evaluations + 1)

        skip = lambda: (coeffs, decoded, result._replace(evaluations=result.evaluations + 1))  # noqa: E731
        return jax.lax.cond(farthest_loss < -config.margin, search, skip)

    return jax.lax.cond(~result.success | (result.lam > 1.0), rescue, lambda: (coeffs, decoded, result))


def _candidates(score_fn: ScoreFn, variables: Mapping[str, Any], original: jax.Array, target: jax.Array,
                plan: DCTPlan, config: DCTConfig):
    """``(candidate(k) -> coefficients, evaluate(k) -> (loss, scores), zero, steps)`` of ``plan``."""
    emus = reencoders.resolve(config.survive).emulations(config.subsampling)
    steps = 1 if config.candidates == "bracket" else config.max_steps
    # With "gradient" and "attack" candidates k = 0 is the plain JPEG; with "bracket" it is k = -1.
    zero = -1 if config.candidates == "bracket" else 0

    def candidate(k):
        return jax.tree.map(lambda p, c: jnp.where(k < 0, p, c), plan.plain, plan_candidate(plan, k, steps)[0])

    def evaluate(k):
        scores = survival.exact_scores(score_fn, variables, codec.decode(candidate(k)), emus)
        return jnp.max(scores) - target, scores

    return candidate, evaluate, zero, steps


def _search(score_fn: ScoreFn, variables: Mapping[str, Any], original: jax.Array, target: jax.Array,
            plan: DCTPlan, config: DCTConfig):
    """The search over ``plan``'s candidates: ``(coefficients, decoded uint8 [H, W, 3], QuantizeResult)``."""
    h, w, _ = original.shape
    limit = survival.l2_limit(h, w, config.max_l2, config.min_psnr)
    xo = original.astype(jnp.float32)
    candidate, evaluate, zero, steps = _candidates(score_fn, variables, original, target, plan, config)

    def l2_of(k):
        return jnp.sqrt(jnp.sum((codec.decode(candidate(k)).astype(jnp.float32) - xo) ** 2))

    n = int(plan.z0.size)
    k_cap, _ = limit_flips(l2_of, plan.n_active, n, limit, zero=zero)
    found = search_flips(evaluate, k_cap, n, config.margin, zero=zero,
                         predict=lambda k: plan_prediction(plan, k, steps), rtol=config.search_rtol,
                         method=config.search)
    coeffs = candidate(found.k)
    k = jnp.maximum(found.k, 0)
    lam = jnp.where(k > 0, plan.sorted_lam[jnp.maximum(k - 1, 0)], 0.0)
    decoded = codec.decode(coeffs)
    l2 = jnp.sqrt(jnp.sum((decoded.astype(jnp.float32) - xo) ** 2))
    within = l2 <= limit
    result = QuantizeResult(found.loss + target, found.loss, found.success & within, lam, k, l2,
                            found.evaluations + plan.gradients, found.aux, found.zero_ok, within, plan.gradients)
    return coeffs, decoded, result


def quantize_dct(
    score_fn: ScoreFn, variables: Mapping[str, Any], originals: jax.Array, adversarial: jax.Array, targets: jax.Array,
    config: DCTConfig = DCTConfig(),
):
    """Batched DCT-domain quantizer (vmap of :func:`quantize_dct_one`; a batch of one runs unbatched, so
    that the attack direction's gradient fallback is computed only when taken); jit it at the call site.

    Args:
      score_fn: ``score_fn(variables, image float [H, W, 3] pixels) -> scalar``.
      variables: model variables.
      originals: ``uint8 [B, H, W, 3]``.
      adversarial: float ``[B, H, W, 3]`` pixels (the attack: its change of the coefficients is the
        direction for ``"attack"``, its loss gradient for ``"gradient"``, its coefficients' brackets for
        ``"bracket"``).
      targets: ``float32 [B]`` target scores.
      config: :class:`DCTConfig` (static).

    Returns:
      ``(coefficients, decoded uint8 [B, H, W, 3], QuantizeResult of [B] arrays)``; ``coefficients``
      is a batched :class:`qcamo_jax.jpeg.codec.JpegCoefficients` (``y: int32 [B, hb, wb, 8, 8]`` ...);
      write image ``i`` with :func:`write_jpeg`.
    """
    one = lambda o, a, t: quantize_dct_one(score_fn, variables, o, a, t, config)
    t = jnp.broadcast_to(jnp.asarray(targets, jnp.float32), originals.shape[:1])
    adversarial = jnp.asarray(adversarial, jnp.float32)
    return map_images(one, originals, adversarial, t)  # a batch of one unbatched: plan_dct's lax.cond stays a branch
