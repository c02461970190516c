"""Embedded image bytes (HF exports) written to disk once each, named by content hash."""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from medvl.jsonio import WriteError

_EXT = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif", "WEBP": ".webp"}


class ImageStore:
    """Writes embedded image bytes once, named by content hash (the same image behind many questions is stored once)."""

    def __init__(self, out_dir: str | os.PathLike):
        self.dir = Path(out_dir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.written = 0
        self.reused = 0

    def save(self, data: bytes) -> str:
        """Absolute path of the stored image; raises ValueError when the bytes are not an image PIL can identify."""
        try:
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
            # over twice PIL's pixel limit PIL refuses to open it: a rejected row, not a crash (between once and
            # twice the limit it is stored, and validation rejects it as image_too_large from its header)
            raise ValueError(f"image bytes are not a readable image ({e})") from None
        path = self.dir / (hashlib.sha1(data).hexdigest()[:20] + _EXT.get(fmt, ".img"))
        if path.exists():
            self.reused += 1
        else:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, path)  # atomic: a reader never sees half an image
            except OSError as e:  # a full disk: the run stops naming the folder (not a row's fault)
                tmp.unlink(missing_ok=True)
                raise WriteError(f"{self.dir}: cannot store an image ({e.strerror or e})") from None
            self.written += 1
        return str(path)
