"""Image class folders ``root/<split>/<class>/**/<image>`` (or a list of images and their classes, as
Tiny-ImageNet's val/) read lazily, one PIL decode per sample.

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


def scan_class_folders(split_dir: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """(image, class index) for every image under ``split_dir/<class>/`` (sub-folders included, as the
    official Tiny-ImageNet ``train/<wnid>/images/``), in sorted order."""
    samples = []
    for index, name in enumerate(classes):
        files = _images_under(split_dir / name)
        if not files:
            raise DataError(f"class folder {split_dir / name} holds no images "
                            f"({', '.join(IMAGE_EXTENSIONS)}); remove it or add its images")
        samples += [(f, index) for f in files]
    return samples


def read_image_list(list_file: Path) -> list[tuple[str, str]]:
    """(file name, class folder name) per line of a list such as Tiny-ImageNet's
    ``val/val_annotations.txt`` (``val_0.JPEG<TAB>n03444034<TAB>...``)."""
    entries = []
    for line_no, line in enumerate(list_file.read_text().splitlines(), 1):
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 2:
            if line.strip():
                raise DataError(f"{list_file}:{line_no}: expected <image> <class> on each line, got {line!r}")
            continue
        entries.append((fields[0], fields[1]))
    return entries


def listed_samples(list_file: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """(image, class index) for the images a list file names, read from ``images/`` beside it."""
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for name, cls in read_image_list(list_file):
        if cls not in index:
            raise DataError(f"{list_file}: {name} is of class {cls}, which has no folder under train/")
        samples.append((list_file.parent / "images" / name, index[cls]))
    return samples


class ClassFolders(Dataset):
    """Samples ``(transform(image), class index)`` of a list of (image file, class index)."""

    def __init__(self, samples: list[tuple[Path, int]], transform, skip_corrupt: bool = False):
        if not samples:
            raise DataError("no images to read")
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.samples = samples
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
