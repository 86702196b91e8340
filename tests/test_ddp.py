"""DDP: a 2-process gloo run (torchrun) ends with the same q weights as one process that computes
the same global batch as the two shards and averages their gradients, as DDP does."""
import itertools
import subprocess
import sys

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, DistributedSampler

from automix import checkpoint
from automix.config import load_config, to_dict
from automix.data import build_datasets
from automix.ema import EMA
from automix.model import build_net
from automix.train import Schedule, _seed, build_optimizer

STEPS = 3
WORLD = 2
CFG = {"method": "automix", "data": {"name": "digits", "image_size": 16},
       "model": {"backbone": "resnet18", "width": 8},
       "automix": {"momentum": 0.9, "momentum_end": 0.99, "lam_margin": 0.0},
       "train": {"epochs": 1, "batch_size": 32, "seed": 3, "device": "cpu", "max_steps_per_epoch": STEPS,
                 "mix_grid_every": 0, "progress": "none"}}
# torchrun runs each rank with one intra-op thread; the reference does too, so the only remaining
# difference is the order of float32 sums in gloo's all-reduce vs. gradient accumulation. (With two
# threads, conv reductions differ by ~1e-7 and this tiny net amplifies that ~100x per step.)
TOLERANCE = dict(rtol=1e-5, atol=1e-6)


def _reference_q_state(cfg):
    torch.manual_seed(cfg.train.seed)
    splits = build_datasets(cfg.data)
    net = build_net(cfg, splits.num_classes)
    opt, lr_sched = build_optimizer(cfg, net, STEPS)
    ema = EMA(net.k, net.q)
    sched = Schedule(cfg, STEPS)
    local = cfg.train.batch_size // WORLD
    shards = []
    for rank in range(WORLD):
        seed = _seed(cfg, 1, rank)
        torch.manual_seed(seed)
        sampler = DistributedSampler(splits.train, WORLD, rank, shuffle=True, seed=cfg.train.seed, drop_last=True)
        sampler.set_epoch(1)
        loader = DataLoader(splits.train, batch_size=local, sampler=sampler, drop_last=True,
                            generator=torch.Generator().manual_seed(seed))
        shards.append((list(itertools.islice(loader, STEPS)), np.random.default_rng(seed),
                       torch.Generator().manual_seed(seed)))
    for t in range(STEPS):
        opt.zero_grad(set_to_none=True)
        for batches, rng, gen in shards:
            x, y = batches[t]
            d = net.draw(x.shape[0], rng, gen, "cpu", tuple(x.shape[-2:]))
            (net(x, y, d, sched.mask_weight(t)).loss / WORLD).backward()
        opt.step()
        lr_sched.step()
        ema.update(sched.momentum(t))
    return {f"q.{k}": v.detach() for k, v in net.q.named_parameters()}


def test_two_process_gloo_matches_one_process(tmp_path):
    cfg = load_config(CFG)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(to_dict(cfg)))
    out = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                           str(WORLD), "-m", "automix.train", str(cfg_file), "--output-dir", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = checkpoint.load(out / "checkpoint")
    # Parameters only: BatchNorm running statistics are per-rank (DDP broadcasts rank 0's).
    ddp_q = state["net"]
    assert state["history"][-1]["world_size"] == WORLD
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref_q = _reference_q_state(cfg)
    finally:
        torch.set_num_threads(threads)
    moved = 0
    for k in ref_q:
        torch.testing.assert_close(ddp_q[k], ref_q[k], **TOLERANCE, msg=lambda m, k=k: f"{k}: {m}")
        moved += 1
    assert moved > 10
