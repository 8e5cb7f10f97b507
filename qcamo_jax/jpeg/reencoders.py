"""The re-encoder set (the threat model): which real JPEG encoders an output must survive, as a value.

A :class:`Reencoder` names one real encoder of :data:`qcamo_jax.jpeg.encoders.ENCODERS` at one quality
and says what the JAX codec must emulate to reproduce it bit for bit: the forward DCT, the chroma
subsampling and the decoder. A :class:`ReencoderSet` is a frozen, hashable tuple of them (usable as a
static option under ``jit``); :meth:`ReencoderSet.emulations` collapses members that are bit-identical
(``pillow-420:90`` and ``libjpegturbo210-islow-420:90`` are one round trip) so the cost of a set is its
number of unique round trips.

Spec strings (``--survive``): comma-separated items, each a profile name (:data:`PROFILES`) or
``ENCODER:QUALITIES`` with ``QUALITIES`` one of ``90``, ``85-95`` (every integer quality from 85 to 95:
a range means what it says; its cost is one round trip per quality) or ``75-95/5`` (75, 80, ..., 95,
the upper end always included), e.g. ``imagemagick:90,pillow-420:85-95/5``.

What is emulated (measured against the real libraries in ``tests/test_reencoders.py``):

* every member's *decoder* is libjpeg-turbo's default (islow IDCT, fancy 4:2:0 upsampling), i.e.
  :func:`qcamo_jax.jpeg.codec.decode`: Pillow decodes the file that way, and ImageMagick 6.9 on
  Debian decodes a JPEG to the same pixels (its re-encoded coefficients equal the codec's encoding of
  Pillow's decode, 0 mismatches, ``scripts/probe_imagemagick.py``);
* ``pillow-444`` / ``pillow-420``: islow DCT, IJG tables of the quality;
* ``libjpeg{6b,turbo210}-{islow,ifast,float}-{444,420}``: as named (``libjpeg9f-*-420`` is within ~1%
  of chroma coefficients only: libjpeg 9 changed its 4:2:0 downsampler);
* ``imagemagick`` (``convert in -quality Q out.jpg``): IFAST DCT for Q <= 90, ISLOW above; the
  sampling depends on the file it re-encodes: a **JPEG input keeps its own sampling** at any Q
  (measured: 4:4:4 input stays 4:4:4 at Q = 75, 4:2:0 input stays 4:2:0 at Q = 95), a PNG input is
  written 4:4:4 for Q >= 90 and 4:2:0 below. Without ``-quality`` IM estimates the input's quality
  (an IJG-table JPEG written at q95 is re-encoded at q95); the set always assumes an explicit quality.
* mozjpeg is a real encoder for evaluation (``mozjpeg-444``, ``mozjpeg-420``) but cannot be a member:
  its default trellis quantization chooses each coefficient by a rate-distortion search on the image
  (4.6% of luma coefficients differ from any rounding of the DCT at q90, with more zeros) and it uses
  its own quantization tables, so no fixed emulation reproduces it.

Data contract of the round trips: pixels ``uint8 [H, W, 3]`` RGB (exact) or ``float32 [H, W, 3]`` in
pixel units 0-255 (differentiable), one image (``vmap`` for batches); outputs stack the round trips on
a leading axis ``[E, H, W, 3]`` in the order of :meth:`ReencoderSet.emulations`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import NamedTuple

import jax.numpy as jnp

from qcamo_jax.errors import QcamoError

#: What kind of file a re-encoder reads: a PNG (8-bit pixels) or a JPEG with this chroma sampling.
INPUT_KINDS = ("png", "444", "420")

#: The decoder every member is emulated with (:func:`qcamo_jax.jpeg.codec.decode`).
DECODER = "libjpeg-turbo-islow-fancy"


class SpecError(QcamoError, ValueError):
    """A re-encoder spec (``--survive``) that cannot be parsed; the message is one line."""


class Emulation(NamedTuple):
    """One exact JAX round trip: decode (libjpeg-turbo defaults), encode with these options, decode."""

    quality: int
    dct_method: str
    subsampling: str

    @property
    def label(self) -> str:
        return f"{self.dct_method}-{self.subsampling}:{self.quality}"


@dataclasses.dataclass(frozen=True, order=True)
class Reencoder:
    """One real re-encoder at one quality, and what the JAX codec emulates for it.

    Attributes:
      encoder: registry name in :data:`qcamo_jax.jpeg.encoders.ENCODERS` (``"imagemagick"``,
        ``"pillow-420"``, ``"libjpegturbo210-islow-420"``, ...).
      quality: IJG quality 1..100 the encoder is run at.
      dct_method: the encoder's forward DCT (``"islow"``, ``"ifast"``, ``"float"``).
      subsampling: ``"444"``, ``"420"`` or ``"input"`` (ImageMagick: a JPEG input keeps its sampling,
        a PNG input gets 4:4:4 at Q >= 90 and 4:2:0 below).
      decoder: how the re-encoder and the viewer decode (always :data:`DECODER`).
    """

    encoder: str
    quality: int
    dct_method: str
    subsampling: str
    decoder: str = DECODER

    @property
    def name(self) -> str:
        """``ENCODER:Q``, the member's name in reports (e.g. ``"pillow-420:90"``)."""
        return f"{self.encoder}:{self.quality}"

    def emulation(self, input_kind: str) -> Emulation:
        """The round trip this member applies to a file of kind ``input_kind`` (:data:`INPUT_KINDS`)."""
        if input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")
        sub = self.subsampling
        if sub == "input":
            sub = input_kind if input_kind != "png" else ("444" if self.quality >= 90 else "420")
        return Emulation(self.quality, self.dct_method, sub)


def reencoder(encoder: str, quality: int) -> Reencoder:
    """The :class:`Reencoder` of registry name ``encoder`` at ``quality``.

    Raises:
      SpecError: unknown encoder, an encoder without an exact emulation (mozjpeg), or quality outside 1..100.
    """
    from qcamo_jax.jpeg import encoders

    if isinstance(quality, bool) or not 1 <= int(quality) <= 100 or int(quality) != quality:
        raise SpecError(f"re-encoder {encoder!r}: quality must be an integer in 1..100, got {quality!r}")
    quality = int(quality)
    if encoder.startswith("mozjpeg"):
        raise SpecError(f"re-encoder {encoder!r} cannot be emulated exactly (trellis quantization, own tables); "
                        f"use it in 'qcamo evaluate --encoders' instead")
    if encoder not in encoders.ENCODERS:
        known = ", ".join(sorted(n for n in encoders.ENCODERS if not n.startswith("mozjpeg")))
        raise SpecError(f"unknown re-encoder {encoder!r}; known: {known}; profiles: {', '.join(PROFILES)}")
    if encoder == "imagemagick":
        return Reencoder(encoder, quality, "ifast" if quality <= 90 else "islow", "input")
    if encoder.startswith("pillow-"):
        return Reencoder(encoder, quality, "islow", encoder.split("-")[1])
    _, dct_method, sub = encoder.split("-")
    return Reencoder(encoder, quality, dct_method, sub)


@dataclasses.dataclass(frozen=True)
class ReencoderSet:
    """A frozen, hashable set of :class:`Reencoder` (sorted, duplicates removed); empty = "as saved only".

    Use :meth:`parse` for spec strings, :data:`PROFILES` for named sets.
    """

    members: tuple[Reencoder, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "members", tuple(sorted(set(self.members))))

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self):
        return iter(self.members)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)

    @property
    def spec(self) -> str:
        """A spec string that :meth:`parse` turns back into this set."""
        return ",".join(self.names)

    def emulations(self, input_kind: str) -> tuple[Emulation, ...]:
        """Unique round trips for a file of kind ``input_kind``, in a fixed order (cost = their number)."""
        return tuple(sorted({m.emulation(input_kind) for m in self.members}))

    def columns(self, input_kind: str) -> dict[str, int]:
        """``member name -> index`` into :meth:`emulations` (several members may share one round trip)."""
        emus = self.emulations(input_kind)
        return {m.name: emus.index(m.emulation(input_kind)) for m in self.members}

    def union(self, other: "ReencoderSet") -> "ReencoderSet":
        return ReencoderSet(self.members + tuple(other.members))

    @classmethod
    def parse(cls, spec: str) -> "ReencoderSet":
        """Parse a ``--survive`` spec (module docstring). Raises :class:`SpecError` (one line)."""
        if not isinstance(spec, str) or not spec.strip():
            raise SpecError(f"--survive: empty re-encoder spec {spec!r}; e.g. 'common' or 'imagemagick:90,pillow-420:85-95'")
        members: list[Reencoder] = []
        for item in (s.strip() for s in spec.split(",")):
            if not item:
                raise SpecError(f"--survive {spec!r}: empty item between commas")
            if item in PROFILES:
                members += PROFILES[item].members
                continue
            if ":" not in item:
                raise SpecError(f"--survive {spec!r}: {item!r} is neither a profile ({', '.join(PROFILES)}) nor "
                                f"ENCODER:QUALITY (e.g. {item}:90)")
            encoder, qualities = item.split(":", 1)
            members += [reencoder(encoder.strip(), q) for q in _qualities(qualities.strip(), spec)]
        return cls(tuple(members))


_RANGE = re.compile(r"^(\d+)(?:-(\d+)(?:/(\d+))?)?$")


def _qualities(text: str, spec: str) -> list[int]:
    m = _RANGE.match(text)
    if not m:
        raise SpecError(f"--survive {spec!r}: quality {text!r} must be Q, A-B or A-B/STEP (e.g. 90, 85-95, 75-95/5)")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else lo
    step = int(m.group(3)) if m.group(3) else 1
    if not (1 <= lo <= hi <= 100) or step < 1:
        raise SpecError(f"--survive {spec!r}: quality range {text!r} must satisfy 1 <= A <= B <= 100 and STEP >= 1")
    out = list(range(lo, hi + 1, step))
    return out if out[-1] == hi else out + [hi]


def _profile(*items: tuple[str, tuple[int, ...]]) -> ReencoderSet:
    return ReencoderSet(tuple(reencoder(e, q) for e, qs in items for q in qs))


#: Named sets. ``common``: what users meet (the default); ``imagemagick``: the paper's single encoder;
#: ``none``: the file as saved only.
PROFILES: dict[str, ReencoderSet] = {}
PROFILES["none"] = ReencoderSet()
PROFILES["imagemagick"] = _profile(("imagemagick", (90,)))
PROFILES["common"] = _profile(
    ("imagemagick", (90,)),
    ("pillow-420", (90,)),
    ("pillow-444", (90,)),
    ("libjpegturbo210-islow-420", (75, 80, 85, 90, 95)),
)

#: The default threat model.
DEFAULT = PROFILES["common"]


def resolve(survive: "ReencoderSet | str | None") -> ReencoderSet:
    """A set from a set, a spec string or ``None`` (the empty set)."""
    if survive is None:
        return ReencoderSet()
    if isinstance(survive, ReencoderSet):
        return survive
    return ReencoderSet.parse(survive)


# ---------------------------------------------------------------------------------------------------
# Round trips in JAX


def roundtrips(pixels, emulations: tuple[Emulation, ...]):
    """Exact round trips: uint8 ``[H, W, 3]`` -> uint8 ``[E, H, W, 3]`` (``E = len(emulations)``, may be 0)."""
    from qcamo_jax.jpeg import codec

    pixels = jnp.asarray(pixels, jnp.uint8)
    outs = [codec.roundtrip(pixels, e.quality, dct_method=e.dct_method, subsampling=e.subsampling) for e in emulations]
    return jnp.stack(outs) if outs else jnp.zeros((0, *pixels.shape), jnp.uint8)


def roundtrips_diff(image, emulations: tuple[Emulation, ...], rounding: str = "ste"):
    """Differentiable round trips (:func:`qcamo_jax.jpeg.diff.jpeg_roundtrip`), exact in value.

    ``image`` float ``[H, W, 3]`` pixels -> float32 ``[E, H, W, 3]``.
    """
    from qcamo_jax.jpeg import diff

    image = jnp.asarray(image, jnp.float32)
    outs = [diff.jpeg_roundtrip(image, e.quality, dct_method=e.dct_method, subsampling=e.subsampling, rounding=rounding)
            for e in emulations]
    return jnp.stack(outs) if outs else jnp.zeros((0, *image.shape), jnp.float32)
