"""Image paths a dataset file names: resolved under --image_root, checked once (exists, size, inside the root)."""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from medvl.jsonio import DataError
from medvl.paths import FileTooLarge, OutsideRoot, check_file_size, resolve_inside


class ImageResolver:
    """Absolute path of an image under `root` (or already absolute), with one filesystem check per distinct path.

    A dataset file names its images; a name that leaves the root (`../../etc/x`, an absolute path elsewhere) is
    refused unless allow_outside_root: a downloaded annotation file must not make us read arbitrary files."""

    def __init__(self, root: str | os.PathLike | None, allow_outside_root: bool = False,
                 max_image_bytes: int | None = None):
        self.root = Path(root).resolve() if root is not None else None
        if self.root is not None and not self.root.is_dir():
            raise DataError(f"image root {root}: not a directory")
        self.allow_outside_root, self.max_image_bytes = allow_outside_root, max_image_bytes
        self._file_problem: dict[str, str | None] = {}

    def path(self, name: str) -> str:
        """The resolved path (symlinks followed): what is written is where the file really is, so later stages
        judge the same file."""
        if self.root is None:
            if not os.path.isabs(name):
                raise DataError(f"relative image path {name!r} needs --image_root")
            return os.path.realpath(name)
        return str(resolve_inside(self.root, name, allow_outside=True))

    def _file(self, path: str) -> str | None:
        if path not in self._file_problem:
            if len(self._file_problem) >= 100_000:  # bounded: one stat per path among the recent ones is enough
                self._file_problem.clear()
            problem = None if os.path.isfile(path) else "image_not_found"
            try:  # by size, before anything opens it (a huge sparse file with an image header is slow to refuse)
                if problem is None:
                    check_file_size(path, self.max_image_bytes)
            except FileTooLarge as e:
                problem = e.reason
            self._file_problem[path] = problem
        return self._file_problem[path]

    def problem(self, path: str) -> str | None:
        """The rejection reason of a resolved image path (image_outside_root | image_not_found |
        image_file_too_large), None when usable."""
        if self.root is not None:
            try:
                resolve_inside(self.root, path, self.allow_outside_root)
            except OutsideRoot as e:
                return e.reason
        return self._file(path)


def image_size(path: str) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size
