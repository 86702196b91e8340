"""data.on_device: the in-memory set held on the device, augmented a batch at a time (run here on the CPU,
which takes the same code path): shapes, coverage of each rank's shard, determinism, a real crop/flip."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DistributedSampler

from automix.config import ConfigError, load_config
from automix.device_data import pad_crop_flip
from automix.loaders import DeviceLoaders, HostLoaders, build_loaders

CPU = torch.device("cpu")


def _cfg(**data):
    data = {"name": "fake", "image_size": 8, "fake_train_size": 50, "fake_test_size": 11, "on_device": "on", **data}
    return load_config({"data": data, "train": {"batch_size": 8, "seed": 3, "eval_batch_size": 4}})


def _epoch(loaders, epoch, seed):
    loaders.set_epoch(epoch, seed)
    return list(loaders.train_batches())


def test_batches_have_the_right_shapes_and_types():
    loaders = build_loaders(_cfg(), rank=0, world_size=2, device=CPU)
    assert isinstance(loaders, DeviceLoaders) and loaders.on_device
    assert (loaders.local_batch_size, loaders.steps_per_epoch, loaders.num_classes) == (4, 6, 10)  # 25 // 4
    batches = _epoch(loaders, 1, 7)
    assert len(batches) == 6
    for x, y in batches:
        assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32 and y.shape == (4,) and y.dtype == torch.long
    test = list(loaders.test_batches())
    assert [len(y) for _, y in test] == [4, 2]  # rank 0 of 2: test samples 0, 2, ..., 10


def test_each_rank_sees_its_distributed_sampler_shard_once_per_epoch():
    """The labels of every batch are those of the host path's order (DistributedSampler, drop_last)."""
    cfg = _cfg()
    labels = build_loaders(cfg, 0, 1, CPU).splits.train.labels
    seen = []
    for rank in range(2):
        loaders = build_loaders(cfg, rank, 2, CPU)
        got = torch.cat([y for _, y in _epoch(loaders, 4, 0)])
        sampler = DistributedSampler(range(50), num_replicas=2, rank=rank, shuffle=True, seed=3, drop_last=True)
        sampler.set_epoch(4)
        order = list(sampler)[:24]  # 6 full batches of 4
        assert torch.equal(got, labels[order])
        seen += order
    assert len(set(seen)) == len(seen) == 48  # disjoint shards, each sample at most once


def test_an_epoch_replays_exactly_and_epochs_differ():
    a = build_loaders(_cfg(), 0, 1, CPU)
    b = build_loaders(_cfg(), 0, 1, CPU)
    first = _epoch(a, 2, 11)
    _epoch(b, 1, 5)  # another epoch first: a resumed run starts at epoch 2 from a fresh process
    again = _epoch(b, 2, 11)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(first, again))
    other = _epoch(a, 3, 12)
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in other]))


def test_the_augmentation_is_a_padded_crop_and_a_flip():
    image = torch.arange(1, 3 * 6 * 6 + 1, dtype=torch.int32).view(1, 3, 6, 6)  # every pixel distinct
    padded = torch.nn.functional.pad(image, (2, 2, 2, 2))
    views = {}
    for oy in range(5):
        for ox in range(5):
            crop = padded[0, :, oy:oy + 6, ox:ox + 6]
            views[(oy, ox, False)] = crop
            views[(oy, ox, True)] = crop.flip(-1)
    g = torch.Generator().manual_seed(0)
    out = pad_crop_flip(image.expand(400, -1, -1, -1), pad=2, flip=True, generator=g)
    found = set()
    for sample in out:
        match = [k for k, v in views.items() if torch.equal(sample, v)]
        assert match, "every output is one crop of the padded image, maybe mirrored"
        found.add(match[0])
    assert len(found) >= 45  # of the 50 (offset, flip) views: all of them drawn, none favoured
    no_flip = pad_crop_flip(image.expand(50, -1, -1, -1), pad=2, flip=False, generator=g)
    assert all(any(torch.equal(s, views[(oy, ox, False)]) for oy in range(5) for ox in range(5)) for s in no_flip)


def test_device_batches_are_normalised_like_the_host_path():
    """Without augmentation (the test view), the two feeds give the same tensors."""
    host = build_loaders(_cfg(on_device="off"), 0, 1, CPU)
    dev = build_loaders(_cfg(), 0, 1, CPU)
    assert isinstance(host, HostLoaders)
    for (xh, yh), (xd, yd) in zip(host.test_batches(), dev.test_batches()):
        assert torch.equal(yh, yd) and torch.allclose(xh, xd, atol=1e-5)


def test_on_device_auto_stays_on_the_host_on_a_cpu_and_on_refuses_what_it_cannot_do():
    assert isinstance(build_loaders(_cfg(on_device="auto"), 0, 1, CPU), HostLoaders)
    cfg = load_config({"data": {"name": "imagenet", "synthetic": True, "image_size": 96, "on_device": "on",
                                "fake_train_size": 16, "fake_test_size": 4}, "train": {"batch_size": 8}})
    with pytest.raises(ConfigError, match="data.on_device = on: imagenet at 96 px"):
        build_loaders(cfg, 0, 1, CPU)
