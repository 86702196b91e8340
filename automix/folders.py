"""Image class folders ``root/<split>/<class>/**/<image>`` read lazily, one PIL decode per sample.

An image that cannot be decoded raises :class:`DataError` naming the file, from inside the data set,
so it surfaces whenever it is met (mid-epoch, in a worker). With ``skip_corrupt`` the next readable
image of the folder set takes its place and the skip is counted in :attr:`ClassFolders.skipped`,
a counter shared with the DataLoader's worker processes.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from .datasets import DataError

log = logging.getLogger("automix")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# What PIL raises for a file that is not a readable image: truncated, not an image, a decoder error.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the sub-folders of ``split_dir`` (no image is opened)."""
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def _images_under(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        found += [Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


class ClassFolders(Dataset):
    """Samples ``(transform(image), class index)``; classes are the sorted folder names of ``classes``."""

    def __init__(self, split_dir: Path, classes: list[str], transform, skip_corrupt: bool = False):
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.samples: list[tuple[Path, int]] = []
        for index, name in enumerate(classes):
            files = _images_under(split_dir / name)
            if not files:
                raise DataError(f"class folder {split_dir / name} holds no images "
                                f"({', '.join(IMAGE_EXTENSIONS)}); remove it or add its images")
            self.samples += [(f, index) for f in files]
        self.targets = [label for _, label in self.samples]
        self._skipped = multiprocessing.get_context().Value("q", 0)

    @property
    def skipped(self) -> int:
        """Corrupt images skipped so far, in this process and its DataLoader workers."""
        return int(self._skipped.value)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        for attempt in range(len(self.samples)):
            path, label = self.samples[(i + attempt) % len(self.samples)]
            try:
                with Image.open(path) as im:
                    image = im.convert("RGB")
            except DECODE_ERRORS as exc:
                if not self.skip_corrupt:
                    raise DataError(f"cannot read image {path}: {exc}; delete or replace it, or set "
                                    f"data.skip_corrupt: true to skip such images") from None
                with self._skipped.get_lock():
                    self._skipped.value += 1
                log.warning("skipping unreadable image %s (%s)", path, exc)
                continue
            return self.transform(image), label
        raise DataError(f"no image under {self.samples[0][0].parent.parent} can be read")
