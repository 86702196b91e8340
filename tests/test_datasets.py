"""Named data sets: their normalisation and augmentation, synthetic data, the low-data regime, class
folders (with a corrupt image), CIFAR pickles and the cheap pre-launch check of data.root."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from automix import transforms as T
from automix.config import ConfigError, DataConfig, load_config
from automix.data import DataError, build_datasets, check_root, labels_of, unnormalize
from automix.datasets import SPECS


def _folders(root, classes=("a", "b", "c"), per_class=3, size=40, val_classes=None):
    """root/{train,val}/<class>/<i>.png, each image a flat colour that encodes (class, index)."""
    for split, names in (("train", classes), ("val", val_classes or classes)):
        for c, name in enumerate(names):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (size, size), (40 * c, 10 * i, 0)).save(root / split / name / f"{i}.png")
    return root


def test_every_named_set_has_its_table_entry():
    assert set(SPECS) == {"digits", "cifar10", "cifar100", "imagenet", "tiny-imagenet", "cub200", "aircraft",
                          "imagefolder", "fake"}
    assert {n: SPECS[n].num_classes for n in ("imagenet", "tiny-imagenet", "cub200", "aircraft")} == {
        "imagenet": 1000, "tiny-imagenet": 200, "cub200": 200, "aircraft": 100}
    assert SPECS["cifar100"].mean == (0.5071, 0.4865, 0.4409) and SPECS["imagenet"].std == (0.229, 0.224, 0.225)


def _kinds(transform) -> list[str]:
    return [type(t).__name__ for t in transform.transforms]


@pytest.mark.parametrize("name, size, train, test", [
    ("imagenet", 224, ["RandomResizedCrop", "RandomHorizontalFlip"], ["Resize", "CenterCrop"]),
    ("cifar100", 32, ["RandomCrop", "RandomHorizontalFlip"], []),
    ("tiny-imagenet", 64, ["RandomResizedCrop", "RandomHorizontalFlip"], ["Resize", "CenterCrop"]),
    ("cub200", 224, ["Resize", "RandomResizedCrop", "RandomHorizontalFlip"], ["Resize", "CenterCrop"]),
    ("aircraft", 224, ["Resize", "RandomResizedCrop", "RandomHorizontalFlip"], ["Resize", "CenterCrop"]),
    ("digits", 16, ["RandomCrop"], []),  # no flip: a mirrored digit is another symbol
    ("imagefolder", 32, ["Resize", "CenterCrop", "RandomCrop", "RandomHorizontalFlip"], ["Resize", "CenterCrop"]),
    ("imagefolder", 160, ["RandomResizedCrop", "RandomHorizontalFlip"], ["Resize", "CenterCrop"]),
    ("fake", 32, ["RandomCrop", "RandomHorizontalFlip"], []),
])
def test_each_set_has_the_specs_augmentation(name, size, train, test):
    spec = SPECS[name]
    wrap = ["ToImage"], ["ToDtype", "Normalize"]
    assert _kinds(spec.train_transform(size)) == wrap[0] + train + wrap[1]
    assert _kinds(spec.test_transform(size)) == wrap[0] + test + wrap[1]


def test_geometry_sizes():
    (crop,) = T.pad_crop(32)
    assert crop.padding == [4, 4, 4, 4] and crop.size == (32, 32)
    resize, center = T.center_view(224)
    assert list(resize.size) == [256] and list(center.size) == [224, 224]
    img = torch.zeros(3, 300, 400, dtype=torch.uint8)
    resize, crop = T.resize_resized_crop(224)
    assert list(resize.size) == [256] and crop.scale == (0.5, 1.0)
    assert v2.Compose(T.resize_resized_crop(224))(img).shape == (3, 224, 224)


@pytest.mark.parametrize("name, classes", [("imagenet", 1000), ("cifar10", 10), ("tiny-imagenet", 200)])
def test_synthetic_data_keeps_the_name_shape_and_classes(name, classes):
    size = 64 if name == "tiny-imagenet" else 32
    cfg = DataConfig(name=name, synthetic=True, image_size=size, root="/nonexistent", fake_train_size=40,
                     fake_test_size=8)
    splits = build_datasets(cfg)
    x, y = splits.train[0]
    assert splits.num_classes == classes and len(splits.train) == 40 and len(splits.test) == 8
    assert x.shape == (3, size, size) and x.dtype == torch.float32 and 0 <= y < classes
    assert splits.test[0][0].shape == (3, size, size)
    assert classes == 10 or int(labels_of(splits.train).max()) >= 10  # labels drawn over all the classes


def test_train_per_class_takes_the_first_images_of_each_class():
    cfg = DataConfig(name="digits", image_size=8, train_per_class=5)
    full = labels_of(build_datasets(DataConfig(name="digits", image_size=8)).train)
    splits = build_datasets(cfg)
    labels = labels_of(splits.train)
    assert len(splits.train) == 50 and torch.bincount(labels).tolist() == [5] * 10
    seen = [0] * 10
    expected = []
    for i, y in enumerate(full.tolist()):  # the first 5 of each class, in the set's order
        if seen[y] < 5:
            expected.append(i)
        seen[y] += 1
    assert splits.train.indices == expected
    assert build_datasets(cfg).train.indices == expected  # deterministic
    with pytest.raises(ConfigError, match="data.train_per_class = 1000: class .* has only"):
        build_datasets(DataConfig(name="digits", image_size=8, train_per_class=1000))


def test_train_per_class_then_train_subset_on_fake_data():
    splits = build_datasets(DataConfig(name="fake", image_size=8, fake_train_size=200, fake_num_classes=4,
                                       train_per_class=10, train_subset=12))
    assert len(splits.train) == 12 and torch.bincount(labels_of(splits.train), minlength=4).max() <= 10


def test_class_folders_train_per_class_and_normalisation(tmp_path):
    root = _folders(tmp_path / "set")
    splits = build_datasets(DataConfig(name="imagefolder", root=str(root), image_size=16, train_per_class=2))
    assert splits.num_classes == 3 and len(splits.train) == 6 and len(splits.test) == 9
    assert labels_of(splits.train).tolist() == [0, 0, 1, 1, 2, 2]
    x, y = splits.test[4]  # class b, image 1: colour (40, 10, 0), ImageNet normalisation
    expected = (torch.tensor([40, 10, 0]) / 255 - torch.tensor(SPECS["imagenet"].mean)) / torch.tensor(
        SPECS["imagenet"].std)
    assert y == 1 and x.shape == (3, 16, 16)
    assert torch.allclose(x[:, 8, 8], expected, atol=1e-5)
    assert torch.allclose(unnormalize(x[None], "imagefolder")[0, :, 8, 8], torch.tensor([40, 10, 0]) / 255, atol=1e-5)


def test_a_corrupt_image_is_named_even_from_a_worker(tmp_path):
    root = _folders(tmp_path / "set")
    bad = root / "train" / "b" / "1.png"
    bad.write_bytes(b"not a png")
    splits = build_datasets(DataConfig(name="imagefolder", root=str(root), image_size=16))
    with pytest.raises(DataError, match=f"cannot read image {bad}"):
        splits.train[4]
    loader = DataLoader(splits.train, batch_size=9, num_workers=1)
    with pytest.raises(DataError) as err:
        next(iter(loader))
    message = str(err.value)
    assert str(bad) in message and "Traceback" not in message and "data.skip_corrupt" in message, message


def test_skip_corrupt_substitutes_and_counts(tmp_path):
    root = _folders(tmp_path / "set")
    (root / "val" / "b" / "1.png").write_bytes(b"not a png")
    (root / "train" / "c" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    splits = build_datasets(DataConfig(name="imagefolder", root=str(root), image_size=16, skip_corrupt=True))
    x, y = splits.test[4]
    assert y == 1 and torch.equal(x, splits.test[5][0])  # the next image of the set took its place
    assert splits.skipped_images == 1
    batches = list(DataLoader(splits.train, batch_size=3, num_workers=1))  # counted inside a worker
    assert sum(len(b[1]) for b in batches) == 9 and splits.skipped_images == 2


def test_check_root_names_root_expectation_and_findings(tmp_path):
    with pytest.raises(DataError, match=r"data.root='.*nothing'.*class folders.*it does not exist"):
        check_root(DataConfig(name="imagenet", root=str(tmp_path / "nothing"), image_size=224))
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "img.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"no folder .*flat/train.*it holds img\.jpg"):
        check_root(DataConfig(name="imagefolder", root=str(tmp_path / "flat")))
    root = _folders(tmp_path / "set", val_classes=("a", "b", "d"))
    with pytest.raises(DataError, match="not in both: c, d"):
        check_root(DataConfig(name="imagefolder", root=str(root)))
    root = _folders(tmp_path / "three")
    check_root(DataConfig(name="imagefolder", root=str(root)))
    with pytest.raises(DataError, match="3 class folders, not 200 .*imagefolder"):
        check_root(DataConfig(name="cub200", root=str(root), image_size=224))
    with pytest.raises(DataError, match=r"cifar-100-python lacks train, test"):
        check_root(DataConfig(name="cifar100", root=str(tmp_path)))
    check_root(DataConfig(name="cifar100", root=str(tmp_path), synthetic=True))  # nothing to read


def test_an_empty_class_folder_is_named(tmp_path):
    root = _folders(tmp_path / "set")
    (root / "train" / "z").mkdir()
    (root / "val" / "z").mkdir()
    with pytest.raises(DataError, match=r"class folder .*train/z holds no images"):
        build_datasets(DataConfig(name="imagefolder", root=str(root)))


def _cifar100(root, n_train=20, n_test=10):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("test", n_test)):
        entry = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": list(range(n))}
        (folder / name).write_bytes(pickle.dumps(entry))
    return folder


def test_cifar_pickles_are_read_into_memory(tmp_path):
    folder = _cifar100(tmp_path)
    splits = build_datasets(DataConfig(name="cifar100", root=str(tmp_path), image_size=32))
    assert (len(splits.train), len(splits.test), splits.num_classes) == (20, 10, 100)
    raw = pickle.loads((folder / "test").read_bytes())[b"data"][3].reshape(3, 32, 32)
    spec = SPECS["cifar100"]
    expected = (torch.from_numpy(raw).float() / 255 - torch.tensor(spec.mean).view(3, 1, 1)) / torch.tensor(
        spec.std).view(3, 1, 1)
    assert splits.test[3][1] == 3 and torch.allclose(splits.test[3][0], expected, atol=1e-5)
    with pytest.raises(ConfigError, match="data.image_size = 64: cifar100 images are 32 px"):
        build_datasets(DataConfig(name="cifar100", root=str(tmp_path), image_size=64))
    (folder / "test").write_bytes(b"garbage")
    with pytest.raises(DataError, match="test is not a CIFAR python pickle"):
        build_datasets(DataConfig(name="cifar100", root=str(tmp_path), image_size=32))


def test_on_device_with_a_folder_set_is_a_config_error():
    with pytest.raises(ConfigError, match="data.on_device.*auto or off for data.name=imagenet"):
        load_config({"data": {"name": "imagenet", "on_device": "on"}})
    assert load_config({"data": {"name": "imagenet", "on_device": "on", "synthetic": True}}).data.on_device == "on"


def test_the_official_tiny_imagenet_layout_is_read_as_it_is(tmp_path):
    """train/<wnid>/images/*.JPEG and val/images/ + val/val_annotations.txt, as the download unpacks."""
    root = tmp_path / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(200)]
    for c, wnid in enumerate(wnids):
        (root / "train" / wnid / "images").mkdir(parents=True)
        if c < 2:  # only two classes get an image each; the others are never read
            Image.new("RGB", (64, 64), (100 * c, 0, 0)).save(root / "train" / wnid / "images" / f"{wnid}_0.JPEG")
    (root / "val" / "images").mkdir(parents=True)
    for i, c in enumerate((1, 0, 1)):
        Image.new("RGB", (64, 64), (100 * c, 50, 0)).save(root / "val" / "images" / f"val_{i}.JPEG")
    lines = [f"val_{i}.JPEG\t{wnids[c]}\t0\t0\t63\t63" for i, c in enumerate((1, 0, 1))]
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    cfg = DataConfig(name="tiny-imagenet", root=str(root), image_size=64)
    check_root(cfg)
    with pytest.raises(DataError, match=r"n00000002 holds no images"):
        build_datasets(cfg)  # every class folder must hold images
    for wnid in wnids[2:]:
        Image.new("RGB", (64, 64)).save(root / "train" / wnid / "images" / f"{wnid}_0.JPEG")
    splits = build_datasets(cfg)
    assert (len(splits.train), len(splits.test), splits.num_classes) == (200, 3, 200)
    assert labels_of(splits.test).tolist() == [1, 0, 1] and splits.test[0][0].shape == (3, 64, 64)
    (root / "val" / "val_annotations.txt").write_text(lines[0].replace(wnids[1], "n99999999") + "\n")
    with pytest.raises(DataError, match="val_annotations.txt names classes without a train/ folder: n99999999"):
        build_datasets(cfg)


def test_the_trainer_reports_skipped_images(tmp_path):
    from automix.train import train

    root = _folders(tmp_path / "set", per_class=4)
    (root / "train" / "c" / "0.png").write_bytes(b"not a png")
    cfg = load_config({"method": "vanilla", "data": {"name": "imagefolder", "root": str(root), "image_size": 16,
                                                     "skip_corrupt": True},
                       "model": {"width": 4}, "optim": {"warmup_epochs": 0},
                       "train": {"epochs": 1, "batch_size": 4, "device": "cpu", "mix_grid_every": 0,
                                 "progress": "none", "threads": 1}})
    history = train(cfg, tmp_path / "run")
    assert history[-1]["skipped_images"] == 1  # one pass over the train set met the corrupt file once
