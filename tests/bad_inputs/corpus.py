"""A corpus of odd and bad input files, generated on demand (nothing binary is committed).

``write_corpus(folder, size)`` writes every case into ``folder`` and returns ``{case: path}``.
:data:`HANDLED` cases must be converted to RGB and attacked; :data:`REFUSED` cases must be refused
with a one-line reason naming the file, while the rest of the batch goes on.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

#: case -> what the pipeline must do with it (documented in docs/cli.md).
HANDLED = (
    "rgb_jpeg",
    "grayscale_png",
    "rgba_png",
    "palette_png",
    "palette_transparent_gif",
    "cmyk_jpeg",
    "gray16_png",
    "rgb16_png",
    "exif_rotated_jpeg",
    "odd_size_png",
    "colour_key_png",
    "dark16_pgm",
    "bad_ancillary_crc_png",
    "stereo_mpo",
    "icc_swapped_png",
)
REFUSED = (
    "zero_byte",
    "truncated_jpeg",
    "truncated_png",
    "not_an_image",
    "too_small",
    "decompression_bomb",
    "broken_symlink",
    "no_read_permission",
    "bad_critical_crc_png",
)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes_16bit(arr: np.ndarray) -> bytes:
    """A 16-bit PNG (gray [H, W] or RGB [H, W, 3] uint16), written by hand: Pillow cannot write RGB;16."""
    h, w = arr.shape[:2]
    color_type = 0 if arr.ndim == 2 else 2
    rows = arr.astype(">u2").reshape(h, -1).tobytes()
    stride = len(rows) // h
    raw = b"".join(b"\x00" + rows[i * stride:(i + 1) * stride] for i in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b"")


def png_insert_chunk(png: bytes, kind: bytes, data: bytes, crc_ok: bool = True) -> bytes:
    """``png`` with a chunk inserted right after IHDR (its CRC deliberately wrong if ``crc_ok`` is False)."""
    chunk = _png_chunk(kind, data)
    if not crc_ok:
        chunk = chunk[:-4] + bytes(b ^ 0xFF for b in chunk[-4:])
    return png[:33] + chunk + png[33:]


def png_break_crc(png: bytes, kind: bytes) -> bytes:
    """``png`` with the CRC of its first ``kind`` chunk flipped (the chunk's data untouched)."""
    pos = 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        end = pos + 12 + length
        if png[pos + 4 : pos + 8] == kind:
            return png[: end - 4] + bytes(b ^ 0xFF for b in png[end - 4 : end]) + png[end:]
        pos = end
    raise ValueError(f"no {kind!r} chunk")


def swapped_srgb_profile() -> bytes:
    """An RGB ICC profile whose red and blue primaries are sRGB's blue and red (LittleCMS's sRGB with the
    ``rXYZ`` and ``bXYZ`` tag entries exchanged): pixels tagged with it are, in sRGB, the same pixels with
    R and B exchanged (all three tone curves are equal), a conversion anyone can check by eye."""
    from PIL import ImageCms

    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    (count,) = struct.unpack(">I", data[128:132])
    entries = {bytes(data[132 + 12 * i : 136 + 12 * i]): 132 + 12 * i for i in range(count)}
    r, b = entries[b"rXYZ"], entries[b"bXYZ"]
    data[r + 4 : r + 12], data[b + 4 : b + 12] = data[b + 4 : b + 12], data[r + 4 : r + 12]
    data[84:100] = bytes(16)  # profile ID (MD5) no longer valid: zero means "not computed"
    return bytes(data)


def pgm_bytes(arr: np.ndarray, maxval: int) -> bytes:
    """A binary PGM (``[H, W]``) or PPM (``[H, W, 3]``) with the given ``maxval`` (values must be <= it)."""
    magic = b"P5" if arr.ndim == 2 else b"P6"
    h, w = arr.shape[:2]
    dtype = ">u2" if maxval > 255 else "u1"
    return magic + f"\n{w} {h}\n{maxval}\n".encode() + np.ascontiguousarray(arr).astype(dtype).tobytes()


def bomb_png_bytes(width: int = 20000, height: int = 20000) -> bytes:
    """A tiny PNG whose header claims ``width x height`` gray pixels (400 Mpx): a decompression bomb."""
    row = b"\x00" + b"\x00" * width
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(64)) + comp.flush()  # only the first rows: header is what matters
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def write_corpus(folder: str | os.PathLike, base: np.ndarray, min_size: tuple[int, int] = (32, 32)) -> dict[str, Path]:
    """Write every case into ``folder``; ``base`` is a ``uint8 [H, W, 3]`` photo the handled cases derive from.

    The EXIF-rotated case stores ``base`` transposed (W x H) with orientation 6 (rotate 90 clockwise on
    display) so that a reader honouring EXIF gets back an image of ``base``'s shape.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    h, w = base.shape[:2]
    rgb = Image.fromarray(base)
    gray = rgb.convert("L")
    files: dict[str, bytes] = {}
    files["rgb_jpeg.jpg"] = _encode(rgb, "JPEG", quality=95)
    files["grayscale_png.png"] = _encode(gray, "PNG")
    alpha = Image.fromarray(np.tile(np.linspace(0, 255, w, dtype=np.uint8), (h, 1)))
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    files["rgba_png.png"] = _encode(rgba, "PNG")
    files["palette_png.png"] = _encode(rgb.quantize(64), "PNG")
    pal = rgb.quantize(63)
    pal_arr = np.array(pal)
    pal_arr[: h // 4, : w // 4] = 63
    pal2 = Image.fromarray(pal_arr, "P")
    pal2.putpalette(pal.getpalette()[: 63 * 3] + [0, 255, 0])
    files["palette_transparent_gif.gif"] = _encode(pal2, "GIF", transparency=63)
    files["cmyk_jpeg.jpg"] = _encode(rgb.convert("CMYK"), "JPEG", quality=95)
    files["gray16_png.png"] = png_bytes_16bit(np.asarray(gray, np.uint16) * 257)
    # High byte = the photo, low byte = its complement: an 8-bit reader must take the high byte.
    files["rgb16_png.png"] = png_bytes_16bit(base.astype(np.uint16) * 256 + (255 - base))
    # Orientation 6: the stored pixels are the displayed image rotated 90 degrees counter-clockwise.
    stored = rgb.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    files["exif_rotated_jpeg.jpg"] = _encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    odd = rgb.resize((w - 3, h - 5)) if (w > min_size[1] + 3 and h > min_size[0] + 5) else rgb
    files["odd_size_png.png"] = _encode(odd, "PNG")
    # tRNS colour key (pure black is transparent), as cases/rgb_colour_key.png.
    keyed = base.copy()
    keyed[h // 3 : h // 2] = 0
    files["colour_key_png.png"] = _encode(Image.fromarray(keyed), "PNG", transparency=(0, 0, 0))
    # A dark 16-bit exposure (values 0..16320 of 65535: 8-bit 0..63), as cases/dark16.pgm.
    files["dark16_pgm.pgm"] = pgm_bytes(np.asarray(gray, np.uint16) * 64, 65535)
    files["bad_ancillary_crc_png.png"] = png_insert_chunk(_encode(rgb, "PNG"), b"tEXt", b"Comment\x00hello", crc_ok=False)
    files["stereo_mpo.mpo"] = _encode(rgb, "MPO", quality=95, save_all=True, append_images=[rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    files["icc_swapped_png.png"] = _encode(rgb, "PNG", icc_profile=swapped_srgb_profile())
    files["bad_critical_crc_png.png"] = png_break_crc(_encode(rgb, "PNG"), b"IHDR")
    files["zero_byte.jpg"] = b""
    full_jpeg = _encode(rgb, "JPEG", quality=95)
    files["truncated_jpeg.jpg"] = full_jpeg[: len(full_jpeg) // 2]
    full_png = _encode(rgb, "PNG")
    files["truncated_png.png"] = full_png[: len(full_png) // 2]
    files["not_an_image.png"] = b"This is a text file with an image extension.\n" * 20
    small = rgb.resize((max(1, min_size[1] // 2), max(1, min_size[0] // 2)))
    files["too_small.png"] = _encode(small, "PNG")
    files["decompression_bomb.png"] = bomb_png_bytes()
    out: dict[str, Path] = {}
    for name, data in files.items():
        p = folder / name
        p.write_bytes(data)
        out[name.rsplit(".", 1)[0]] = p
    # Unreadable: mode 000 (root reads it anyway; tests of this case skip under root).
    locked = folder / "no_read_permission.png"
    locked.write_bytes(_encode(rgb, "PNG"))
    locked.chmod(0)
    out["no_read_permission"] = locked
    link = folder / "broken_symlink.jpg"
    if not link.is_symlink():
        link.symlink_to(folder / "does_not_exist.jpg")
    out["broken_symlink"] = link
    assert set(out) == set(HANDLED) | set(REFUSED), sorted(set(out) ^ (set(HANDLED) | set(REFUSED)))
    return out
