"""Stand-ins for ``automix.train.train`` (``Options.train_fn``) that make the study runner's failure,
retry and interrupt paths happen on purpose, in a second per trial, without torch.

Each call appends ``<seed> <amp>`` to the file named by ``$FAKE_TRAIN_LOG`` (one line per attempt that
actually trains). ``train.seed`` picks the behaviour:

- 0: a ConfigError (deterministic) at the start;
- 1: transient: the first attempt of the launch kills its process after epoch 1 (marker file next to
  the log), the retry finishes;
- 2: a non-finite loss at epoch 2 while train.amp is fp16; finishes in any other precision;
- else: finishes; ``$FAKE_TRAIN_EPOCH_S`` seconds per epoch.
"""
from __future__ import annotations

import os
import time
from pathlib import Path


def train(cfg, output_dir, *, reporter=None, resume_from=None, device=None):
    from automix.config import ConfigError
    from automix.train import NonFiniteLossError

    log = Path(os.environ["FAKE_TRAIN_LOG"])
    with log.open("a") as fh:
        fh.write(f"{cfg.train.seed} {cfg.train.amp}\n")
    seed = cfg.train.seed
    if seed == 0:
        raise ConfigError("optim.lr = 5.0: the fake trainer refuses it (a deterministic error)")
    start = 1
    for epoch in range(start, cfg.train.epochs + 1):
        time.sleep(float(os.environ.get("FAKE_TRAIN_EPOCH_S", "0.2")))
        if seed == 2 and epoch == 2 and cfg.train.amp == "fp16":
            raise NonFiniteLossError("loss_total is nan at epoch 2 (train.amp fp16)")
        reporter.report({"epoch": epoch, "top1": 10.0 * epoch + seed, "top1_q": 9.0 * epoch,
                         "train_loss": 1.0 / epoch}, None, [])
        if seed == 1 and epoch == 1:
            marker = log.with_suffix(".crashed")
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            os._exit(1)
    return []
