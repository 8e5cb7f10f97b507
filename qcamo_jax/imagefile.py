"""Opening an image file with Pillow, with libpng's rules for damaged chunks and the true reason for a refusal.

Data contract: :func:`open_image` takes a path and returns an open, not yet loaded
:class:`PIL.Image.Image`; it raises :class:`qcamo_jax.errors.ImageFileError` with a one-line reason
(bad CRC in a critical PNG chunk, truncated data, a format Pillow recognises but cannot read...) and
issues :class:`qcamo_jax.errors.ImageFileWarning` when it drops damaged ancillary PNG chunks (libpng's
``png_crc_finish``: warn and discard ancillary chunks, error on critical ones; PNG spec 5.4). Used by
:func:`qcamo_jax.imageio.load_rgb`, which turns the image into sRGB pixels.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
import zlib

from PIL import Image

from qcamo_jax.errors import ImageFileError, ImageFileWarning

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: Bytes of a file's start that :func:`unsupported_format` looks at.
HEAD_BYTES = 256
_UNSUPPORTED_MAGIC = (
    (re.compile(rb"^....ftyp(heic|heix|hevc|heim|heis|hevm|hevs|mif1|msf1)", re.S), "HEIC/HEIF (Pillow needs the pillow-heif plugin)"),
    (re.compile(rb"^(\xff\x0a|\x00\x00\x00\x0cJXL \r\n\x87\n)", re.S), "JPEG XL (not supported by Pillow)"),
    (re.compile(rb"^%PDF"), "a PDF document, not an image"),
    (re.compile(rb"^\s*(<\?xml[^>]*>\s*)?<svg", re.S | re.I), "SVG (vector graphics, not supported)"),
)


def open_image(path: str) -> Image.Image:
    """``Image.open``, with damaged ancillary PNG chunks dropped and the true reason for a refusal."""
    try:
        im = Image.open(path)
    except Image.UnidentifiedImageError:
        im = None
    except (OSError, EOFError, struct.error) as exc:
        if getattr(exc, "errno", None) is not None:
            raise  # a real I/O error: "cannot read (...)"
        raise ImageFileError(load_failure(header_format(path) or "image", exc), path) from None
    with open(path, "rb") as f:
        head = f.read(len(_PNG_SIGNATURE))
    if head == _PNG_SIGNATURE:
        # Pillow checks the CRCs of the chunks before the image data only (and none after): check them
        # all, as libpng does, and drop the damaged ancillary ones.
        with open(path, "rb") as f:
            data = f.read()
        repaired, dropped, critical = drop_damaged_png_chunks(data)
        if critical:
            if im is not None:
                im.close()
            raise ImageFileError(f"damaged PNG file: bad CRC in the critical chunk {critical[0]}"
                                 + (" (the image data)" if critical[0] == "IDAT" else ""), path)
        if dropped:
            try:
                fixed = Image.open(io.BytesIO(repaired))
            except Image.UnidentifiedImageError:
                pass
            else:
                if im is not None:
                    im.close()
                warnings.warn(ImageFileWarning(f"{path}: ignored PNG chunk(s) with a bad CRC: {', '.join(dropped)} "
                                               f"(ancillary, as libpng does); the image data checks out"), stacklevel=2)
                return fixed
    if im is not None:
        return im
    with open(path, "rb") as f:
        raise ImageFileError(why_unidentified(f.read()), path)


def drop_damaged_png_chunks(data: bytes) -> tuple[bytes, list[str], list[str]]:
    """Remove the ancillary chunks whose CRC is wrong from a PNG file's bytes (libpng's default).

    Returns:
      ``(bytes, names of the ancillary chunks dropped, names of the critical chunks with a bad CRC)``;
      critical chunks are kept (the caller refuses the file), and anything after a truncated chunk is
      kept as it was (the decoder then reports the truncation).
    """
    out, dropped, critical, pos = [data[:8]], [], [], 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 12 + length
        if end > len(data):
            break
        kind = data[pos + 4 : pos + 8]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        damaged = zlib.crc32(data[pos + 4 : end - 4]) & 0xFFFFFFFF != crc
        if damaged and kind[0] & 0x20:  # ancillary: first letter lower case (PNG spec 5.4)
            dropped.append(kind.decode("latin-1"))
            pos = end
            continue
        if damaged:
            critical.append(kind.decode("latin-1"))
        out.append(data[pos:end])
        pos = end
    out.append(data[pos:])
    return b"".join(out), dropped, critical


def why_unidentified(data: bytes) -> str:
    """The true reason Pillow could not open a file, from the plugins that recognise its first bytes.

    Each Pillow plugin whose ``accept`` test passes on the header is asked to open the data again, and
    its exception is the reason (e.g. ``PNG: bad CRC in the critical chunk IHDR``).
    """
    Image.init()
    prefix = data[:16]
    reasons = []
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        if accept is None:
            continue  # these plugins accept everything; their complaint would be noise
        try:
            verdict = accept(prefix)
        except (SyntaxError, IndexError, TypeError, struct.error):  # what Image.open tolerates from accept
            continue
        if not verdict:
            continue
        if isinstance(verdict, str):
            reasons.append(f"{fmt}: {verdict}")
            continue
        try:
            factory(io.BytesIO(data), "")
        except Exception as exc:  # the plugin's own reason, whatever its type
            reasons.append(f"{fmt}: {_pillow_reason(exc)}")
        else:
            reasons.append(f"{fmt}: Pillow recognises the format but refused the file")
    if reasons:
        return "damaged or unsupported image (" + "; ".join(reasons) + ")"
    name = unsupported_format(data)
    if name is not None:
        return f"not readable: {name}"
    return f"not an image (format not recognised; it starts with {data[:8]!r})"


def header_format(path: str | os.PathLike) -> str | None:
    """The Pillow format whose ``accept`` test recognises the file's first 16 bytes, or None.

    Raises:
      OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        prefix = f.read(16)
    Image.init()
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        try:
            if accept is not None and prefix and accept(prefix):
                return fmt
        except (SyntaxError, IndexError, TypeError, struct.error):  # what Image.open tolerates from accept
            continue
    return None


def unsupported_format(data: bytes) -> str | None:
    """What a file no Pillow plugin opens is, from its first bytes (HEIC, JPEG XL, PDF, SVG), or ``None``.

    Args:
      data: the file's first bytes (:data:`HEAD_BYTES` are enough).
    """
    for pattern, name in _UNSUPPORTED_MAGIC:
        if pattern.match(data[:HEAD_BYTES]):
            return name
    return None


def _pillow_reason(exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    m = re.search(r"bad header checksum in b'(\w{4})'", msg)
    if m:
        return f"bad CRC in the critical chunk {m.group(1)}"
    m = re.search(r"incomplete checksum in b'(\w{4})'", msg)
    if m:
        return f"truncated in the chunk {m.group(1)}"
    if msg == "unknown pixel mode":
        return "a sample layout Pillow cannot decode (e.g. 64-bit or 16-bit float, or float colour samples)"
    return msg


def load_failure(fmt: str, exc: BaseException) -> str:
    """One line for an exception raised while decoding the pixels of an opened file."""
    msg = _pillow_reason(exc)
    low = msg.lower()
    if isinstance(exc, (EOFError, struct.error)) or "truncated" in low or "premature end" in low or "incomplete" in low:
        return f"truncated {fmt} file: the image data ends early ({msg})"
    if "crc" in low or "checksum" in low:
        return f"damaged {fmt} file: {msg}"
    if "decoder" in low and "not available" in low:
        return f"{fmt} file that this Pillow build cannot decode ({msg})"
    return f"cannot decode the {fmt} image data ({msg})"


# ----------------------------------------------------------------------------------------------
# Pixels.
