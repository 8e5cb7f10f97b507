"""What an attack run computes: :class:`Settings`, the constants behind them, and the hashes of a run.

Data contract: :class:`Settings` is frozen and hashable into :func:`settings_hash` (16 hex digits) with
the model's identity (:func:`model_identity`, its checkpoint metadata) and the engine's; two runs with
equal hashes give equal output bytes. :func:`image_seed` is a 31-bit ``int`` per image, from the
image's SHA-256 (hex) and the run's base seed, never from its position in the run. Scores and targets
are on the model's 0-100 scale. Invalid settings raise :class:`qcamo_jax.errors.QcamoError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping

from qcamo_jax.errors import QcamoError

#: Default re-encoder set (``--survive``): a profile of :data:`qcamo_jax.jpeg.reencoders.PROFILES`.
DEFAULT_SURVIVE = "common"
METHODS = ("pgd", "fgsm", "ifgsm", "jpeg-pgd")
#: ``--search``: presets of the budget search of ``pgd`` / ``jpeg-pgd`` (``qcamo_jax.pipeline.methods.search_preset``),
#: the first the default. ``thorough``, not the library's default search (``fast`` here): the quantizer
#: scales the attack's change, and the thorough search's change gave +1.2 dB PSNR at T = 30 and
#: +0.2 dB at T = 50 on the results photos for 26-31% more time (docs/attacks.md, "In the pipeline").
SEARCH_PRESETS = ("thorough", "fast", "paper")
#: Default safety margin (score units): attack and quantizer aim below ``T - 1``, because the decoder
#: and re-encoder a file meets never equal the simulated ones exactly (a q90 re-encoding moved scores of
#: the quick-start photos by up to +0.2 with margin 0, enough to fail one of four).
DEFAULT_MARGIN = 1.0
QUANTIZERS = ("dct", "spatial", "none")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What an attack run computes; two runs with equal settings give equal outputs.

    Attributes:
      target: the score T to get below (0-100 scale).
      method: attack, one of :data:`METHODS`.
      quantize: ``"dct"`` (JPEG coefficients, ``.jpg``), ``"spatial"`` (8-bit pixels, ``.png``) or
        ``"none"`` (plain rounding of the attack, ``.png``).
      quality: JPEG quality of the ``dct`` quantizer's output file; ``None``: the quantizer's default
        (:class:`qcamo_jax.quantize.dct.DCTConfig`), or the member's quality for a set that is one
        ImageMagick re-encoder (the paper's setting, ``--survive imagemagick``).
      seed: base seed; each image's key is derived from it and the image's content hash.
      attack_options: extra options of the attack and quantizer (see :func:`attack_config`).
      survive: the re-encoder set (threat model) every output must stay below T after, as a spec
        string of :meth:`qcamo_jax.jpeg.reencoders.ReencoderSet.parse` (``"common"``,
        ``"imagemagick"``, ``"imagemagick:90,pillow-420:85-95/5"``, ``"none"``).
      max_l2: largest accepted L2 distortion of an output against its input (pixel units), or ``None``.
      min_psnr: smallest accepted PSNR of an output against its input (dB), or ``None``.
    """

    target: float = 50.0
    method: str = "pgd"
    quantize: str = "dct"
    quality: int | None = None
    seed: int = 0
    attack_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    survive: str = DEFAULT_SURVIVE
    max_l2: float | None = None
    min_psnr: float | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise QcamoError(f"unknown --method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.quantize not in QUANTIZERS:
            raise QcamoError(f"unknown --quantize {self.quantize!r}; choose from {', '.join(QUANTIZERS)}")
        if self.quality is not None and not 1 <= int(self.quality) <= 100:
            raise QcamoError(f"--quality must be in 1..100, got {self.quality}")
        self.reencoder_set  # noqa: B018 - a bad --survive spec raises here, before any work
        if self.max_l2 is not None and not self.max_l2 > 0:
            raise QcamoError(f"--max-l2 must be > 0, got {self.max_l2}")
        if self.min_psnr is not None and not self.min_psnr > 0:
            raise QcamoError(f"--min-psnr must be > 0, got {self.min_psnr}")

    @property
    def reencoder_set(self):
        """The parsed :class:`qcamo_jax.jpeg.reencoders.ReencoderSet` of :attr:`survive`."""
        from qcamo_jax.jpeg import reencoders

        return reencoders.ReencoderSet.parse(self.survive)

    @property
    def extension(self) -> str:
        return ".jpg" if self.quantize == "dct" else ".png"

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["attack_options"] = dict(sorted(dict(self.attack_options).items()))
        return d


def settings_hash(settings: Settings, model_id: str, engine_id: str) -> str:
    """Short hash of everything that determines an output: settings, model identity, engine identity."""
    blob = json.dumps({"settings": settings.as_dict(), "model": model_id, "engine": engine_id}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def model_identity(model) -> str:
    """A string identifying a quality model's weights (its checkpoint metadata, sorted)."""
    return json.dumps(dict(sorted((str(k), str(v)) for k, v in dict(model.metadata).items())), sort_keys=True)


def image_seed(sha256_hex: str, seed: int) -> int:
    """The per-image seed: a 31-bit mix of the image's content hash and the run's base seed."""
    h = hashlib.sha256(f"{sha256_hex}:{int(seed)}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF
