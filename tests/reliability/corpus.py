"""The bad-input corpus, written at test time into a tmp dir (nothing large is committed).

`write_images(dir)` -> {kind: path} for every image kind a medical dataset ships; `HANDLED` must train,
`REJECTED` must be refused with the reason given. Bombs are real PNGs whose pixels decompress to ~90 M / ~180 M
pixels but weigh ~100-200 KB: rows of zeros compressed incrementally, so writing them allocates one row.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

# kind -> rejection reason at validation (load_image); kinds not listed must be handled (decoded to RGB)
REJECTED = {"zero_byte": "unreadable_image", "truncated_jpeg": "unreadable_image", "text_as_jpg": "unreadable_image",
            "bomb_warning_size": "image_too_large", "bomb_error_size": "image_too_large"}
HANDLED = ("rgb", "grayscale", "cmyk", "rgba", "png16", "palette_alpha")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_bomb_png(path: Path, width: int, height: int) -> Path:
    """A valid 8-bit grayscale PNG of width x height black pixels, streamed: memory stays at one row."""
    comp, row = zlib.compressobj(9), b"\x00" * (width + 1)  # filter byte 0 + the row
    idat = bytearray()
    for _ in range(height):
        idat += comp.compress(row)
    idat += comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", bytes(idat)) + _chunk(b"IEND", b""))
    return path


def _pattern(size=(48, 40), seed=0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    return (rng.rand(size[1], size[0], 3) * 255).astype("uint8")


def write_images(root: Path) -> dict[str, Path]:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(_pattern())
    out = {}

    def save(kind, name, im, **kw):
        out[kind] = root / name
        im.save(out[kind], **kw)

    save("rgb", "rgb.jpg", rgb, quality=95)
    save("grayscale", "gray.png", rgb.convert("L"))
    save("cmyk", "cmyk.jpg", rgb.convert("CMYK"), quality=95)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray((np.arange(40 * 48).reshape(40, 48) % 256).astype("uint8")))
    save("rgba", "rgba.png", rgba)
    # 16-bit grayscale as CT/X-ray PNGs ship it, using only the low 12 bits (a plain 8-bit convert would clip to white)
    save("png16", "ct16.png", Image.fromarray((np.arange(40 * 48).reshape(40, 48) * 2).astype(np.uint16)))
    pal = rgb.convert("P", palette=Image.ADAPTIVE, colors=16)
    save("palette_alpha", "palette.png", pal, transparency=0)

    out["zero_byte"] = root / "zero.jpg"
    out["zero_byte"].write_bytes(b"")
    full = root / "full.jpg"
    rgb.resize((256, 256)).save(full, quality=95)
    out["truncated_jpeg"] = root / "truncated.jpg"
    out["truncated_jpeg"].write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    out["text_as_jpg"] = root / "notes.jpg"
    out["text_as_jpg"].write_text("patient notes, not an image\n")
    limit = Image.MAX_IMAGE_PIXELS  # PIL warns above this and refuses above twice this
    side = int((limit * 1.01) ** 0.5) + 1
    out["bomb_warning_size"] = write_bomb_png(root / "bomb_warn.png", side, side)
    side2 = int((limit * 2.02) ** 0.5) + 1
    out["bomb_error_size"] = write_bomb_png(root / "bomb_error.png", side2, side2)
    return out
