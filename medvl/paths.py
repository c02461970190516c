"""Rules for the image files records name, one for every stage (conversion, validation, training, generation, report).

Root: a file is judged by where it really is: the path is resolved (`..` collapsed, every symlink followed) and must
lie under the resolved root. Judging the path as written (abspath) lets `root/link.png -> /elsewhere` through.
Size: a file over max_bytes is refused from its size alone, before it is opened (a 2 GB sparse file with a JPEG
header took PIL minutes to reject).
"""
from __future__ import annotations

import os
from pathlib import Path

OUTSIDE_ROOT = "image_outside_root"
FILE_TOO_LARGE = "image_file_too_large"
MAX_IMAGE_BYTES = 64 << 20  # far above a VQA image (a 4k x 4k 16-bit grey PNG is at most 32 MB); else raise it


class OutsideRoot(ValueError):
    """A path that resolves outside the image root; `reason` is the stable report key, `path` where it leads."""

    reason = OUTSIDE_ROOT

    def __init__(self, name: str | os.PathLike, path: Path, root: Path):
        self.path = path
        super().__init__(f"{str(name)!r} leaves the image root {root} (it resolves to {path})")


def resolve_inside(root: str | os.PathLike, path: str | os.PathLike, allow_outside: bool = False) -> Path:
    """The resolved file `path` names (a relative path starts at `root`).

    Raises OutsideRoot when it does not lie under the resolved root, unless allow_outside. The file need not exist
    (a missing file is the caller's reason to give, not this one)."""
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(Path(root) / path))  # an absolute `path` replaces root in the join
    if not allow_outside and not real.is_relative_to(real_root):
        raise OutsideRoot(path, real, real_root)
    return real


class FileTooLarge(ValueError):
    reason = FILE_TOO_LARGE


def check_file_size(path: str | os.PathLike, max_bytes: int | None = None) -> int:
    """The file's size in bytes; raises FileTooLarge above max_bytes (default MAX_IMAGE_BYTES)."""
    limit = max_bytes or MAX_IMAGE_BYTES
    size = os.stat(path).st_size
    if size > limit:
        raise FileTooLarge(f"{path}: {size} bytes > {limit} (--max_image_bytes)")
    return size
