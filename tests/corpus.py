"""A corpus of real-world bad and awkward image files, generated (nothing binary is committed).

`make_corpus(folder, source_jpeg)` returns {name: (path, expected)} where expected is "ok" (must
decode to an upright RGB image) or a substring of the skip reason.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG whose header claims w x h (what a decompression bomb looks like before decoding)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


def _ztxt_bomb(path: Path, src: Image.Image) -> None:
    """A small PNG with a zTXt chunk that inflates to 64 MB (Pillow refuses it with a ValueError)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    b = io.BytesIO()
    src.resize((16, 16)).save(b, "PNG")
    raw = b.getvalue()
    path.write_bytes(raw[:33] + chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"a" * (64 << 20), 9)) + raw[33:])


def _cut_tiff(path: Path, src: Image.Image) -> None:
    """A two-page TIFF cut in half (Pillow raises TypeError 'Missing dimensions', outside its usual errors)."""
    b = io.BytesIO()
    small = src.resize((32, 32))
    small.save(b, "TIFF", save_all=True, append_images=[small.rotate(90)])
    path.write_bytes(b.getvalue()[: len(b.getvalue()) // 2])


def make_corpus(folder: Path, source: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    src = Image.open(source).convert("RGB")
    raw = Path(source).read_bytes()
    out: dict[str, tuple[Path, str]] = {}

    def put(name, expected):
        out[name] = (folder / name, expected)
        return folder / name

    put("truncated.jpg", "truncated").write_bytes(raw[: len(raw) // 2])
    put("empty.jpg", "empty").write_bytes(b"")
    put("text.jpg", "not an image").write_text("this is not a picture\n" * 20)
    src.convert("CMYK").save(put("cmyk.jpg", "ok"), quality=95)
    g = np.linspace(0, 65535, 96 * 96, dtype=np.uint16).reshape(96, 96)
    Image.fromarray(g).save(put("gray16.png", "ok"))
    rgba = src.convert("RGBA")
    a = np.asarray(rgba).copy()
    a[:, : a.shape[1] // 2, 3] = 0  # left half transparent
    Image.fromarray(a, "RGBA").save(put("rgba.png", "ok"))
    pal = src.convert("P", palette=Image.ADAPTIVE, colors=64)
    pal.info["transparency"] = 0
    pal.save(put("palette.png", "ok"), transparency=0)
    src.convert("P", palette=Image.ADAPTIVE, colors=32).save(put("palette.gif", "ok"))
    frames = [src.rotate(10 * i).convert("P", palette=Image.ADAPTIVE) for i in range(3)]
    frames[0].save(put("animated.gif", "ok"), save_all=True, append_images=frames[1:], duration=100, loop=0)
    wide = src.resize((96, 64))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    wide.save(put("exif_rotated.jpg", "ok"), exif=exif.tobytes())
    src.convert("L").save(put("grayscale.jpg", "ok"))
    _png_header_only(put("bomb.png", "too large: 12000x12000"), 12000, 12000)
    _ztxt_bomb(put("ztxt_bomb.png", "Decompressed data too large"), src)
    _cut_tiff(put("cut_pages.tif", "corrupt image: Missing dimensions"), src)
    src.save(put("name with spaces é ü 名.jpg", "ok"))
    loop = put("loop.jpg", "symlink loop")
    os.symlink(loop.name, loop)
    unreadable = put("unreadable.jpg", "permission denied")
    src.save(unreadable)
    os.chmod(unreadable, 0)
    return out


def as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def jpeg_bytes(im: Image.Image) -> bytes:
    b = io.BytesIO()
    im.save(b, "JPEG")
    return b.getvalue()
