"""Image files -> RGB images for the encoder: the one reader used by validation, training, evaluation and the report.

Every mode a medical image comes in (grayscale, 16-bit, CMYK, palette, alpha) is converted, not rejected; a file that
is too big, a decompression bomb or an unreadable file is a SampleError naming the record.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from medvl.paths import FileTooLarge, check_file_size
from medvl.samples import SampleError


def load_image(path: str | os.PathLike, sample_id: Any = None, max_image_pixels: int | None = None,
               max_image_bytes: int | None = None):
    """Open an image as RGB. Grayscale, 16-bit, CMYK, palette and alpha images are converted, not rejected.

    A file over max_image_bytes (default medvl.paths.MAX_IMAGE_BYTES) is rejected as image_file_too_large from its
    size, before it is opened.

    An image over max_image_pixels (default: PIL's MAX_IMAGE_PIXELS, the size PIL calls a possible decompression
    bomb) is rejected as image_too_large from its header, before any pixel is decoded. PIL itself only warns up
    to twice that size and decodes it: ~90 M pixels, a few hundred MB per image per worker."""
    limit = max_image_pixels or Image.MAX_IMAGE_PIXELS or 89_478_485
    p = Path(path)
    if not p.is_file():
        raise SampleError(sample_id, "missing_image", str(p))
    try:
        check_file_size(p, max_image_bytes)
    except FileTooLarge as e:
        raise SampleError(sample_id, e.reason, str(e)) from None
    try:
        with Image.open(p) as im:
            if im.width * im.height > limit:
                raise SampleError(sample_id, "image_too_large", f"{im.width}x{im.height} > {limit} pixels: {p}")
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                # 16/32-bit grayscale: rescale to 8 bits by the image's own range (a plain convert clips).
                arr = np.asarray(im, dtype=np.float64)
                lo, hi = float(arr.min()), float(arr.max())
                arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
                im = Image.fromarray(arr.astype(np.uint8), mode="L")
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGB", im.size, (0, 0, 0))
                bg.paste(im, mask=im.split()[-1])
                return bg
            return im.convert("RGB")
    except SampleError:
        raise
    except Image.DecompressionBombError as e:  # over twice PIL's limit: refused by PIL at open
        raise SampleError(sample_id, "image_too_large", f"{p}: {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise SampleError(sample_id, "unreadable_image", f"{p}: {e}") from None
