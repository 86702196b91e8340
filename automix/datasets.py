"""The named data sets: one frozen record per set with its normalisation, class count and augmentation
(docs/automix_spec.md, "Defaults per setting"). Reading the files is in :mod:`automix.data`."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from . import transforms as T

IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


class DataError(RuntimeError):
    """A data set is missing or malformed; the message names the setting or the file to fix.

    Raised inside a DataLoader worker, it is re-raised in the training process by PyTorch, which builds
    a new one from the worker's whole traceback; the message is cut back to the original one line."""

    def __init__(self, message: str):
        if message.startswith("Caught ") and "Original Traceback" in message:
            last = message.rstrip().splitlines()[-1]
            message = last.split(": ", 1)[1] if ": " in last else last
            message += " (in a DataLoader worker)"
        super().__init__(message)


@dataclass(frozen=True)
class DatasetSpec:
    """How one named set is read and augmented. Geometry builders take the output size (data.image_size)."""
    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int | None  # fixed by the set; None: from the class folders or data.fake_num_classes
    source: Literal["digits", "cifar", "folders", "fake"]
    train_geometry: T.Geometry
    test_geometry: T.Geometry
    flip: bool = True  # horizontal flip in training (not for digits: a flipped digit is another symbol)
    stored_size: int | None = None  # the files' resolution where it is fixed (CIFAR: 32 px)
    layout: str = ""  # what data.root must hold, for error messages
    # A list of the validation images and their classes, used when data.root holds it instead of val/
    # class folders (the official Tiny-ImageNet download); the images are in images/ beside it.
    val_list: str | None = None

    def train_transform(self, size: int):
        return T.compose(self.train_geometry(size), self.flip, self.mean, self.std)

    def test_transform(self, size: int):
        return T.compose(self.test_geometry(size), False, self.mean, self.std)

    def batched_augment_ok(self, size: int) -> bool:
        """True where the training augmentation is a padded random crop (+ flip) of images stored at
        ``size`` and the test view is the image as stored: what data.on_device does on the device."""
        train = self.train_geometry is T.pad_crop or (self.train_geometry is T.pad_crop_up_to_64 and size <= 64)
        test = self.test_geometry is T.plain or (self.test_geometry is T.plain_up_to_64 and size <= 64)
        return train and test


def _folders(name: str, mean_std, classes: int | None, train, test, what: str) -> DatasetSpec:
    layout = (f"class folders {{train,val}}/<class>/<image>{f' ({classes} classes)' if classes else ''}"
              f"{'; ' + what if what else ''}")
    return DatasetSpec(name, *mean_std, classes, "folders", train, test, layout=layout)


def _cifar(name: str, mean_std, classes: int, folder: str) -> DatasetSpec:
    return DatasetSpec(name, *mean_std, classes, "cifar", T.pad_crop, T.plain, stored_size=32,
                       layout=f"the python version of {name}: {folder}/ from the official tarball")


SPECS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("digits", *HALF, 10, "digits", T.pad_crop_up_to_64, T.plain_up_to_64, flip=False,
                layout="nothing (scikit-learn's built-in digits)"),
    _cifar("cifar10", ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)), 10, "cifar-10-batches-py"),
    _cifar("cifar100", ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)), 100, "cifar-100-python"),
    _folders("imagenet", IMAGENET_MEAN_STD, 1000, T.resized_crop, T.center_view, "train/n01440764/*.JPEG, ..."),
    # Tiny-ImageNet: ImageNet's statistics, as the reference configs normalise it. The official
    # tiny-imagenet-200/ folder is read as it is (train/<wnid>/images/, val/val_annotations.txt).
    replace(_folders("tiny-imagenet", IMAGENET_MEAN_STD, 200, T.resized_crop, T.resize_view,
                     "or the official val/images/ with val/val_annotations.txt"),
            val_list="val/val_annotations.txt"),
    _folders("cub200", IMAGENET_MEAN_STD, 200, T.resize_resized_crop, T.center_view,
             "CUB_200_2011/images split by train_test_split.txt"),
    _folders("aircraft", IMAGENET_MEAN_STD, 100, T.resize_resized_crop, T.center_view,
             "FGVC-Aircraft variants, images_variant_{trainval,test}.txt"),
    _folders("imagefolder", IMAGENET_MEAN_STD, None, T.folder_crop_up_to_64, T.resize_up_to_64, ""),
    DatasetSpec("fake", *HALF, None, "fake", T.pad_crop_up_to_64, T.plain_up_to_64,
                layout="nothing (random images)"),
)}


def spec_for(name: str) -> DatasetSpec:
    return SPECS[name]
