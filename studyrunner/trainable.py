"""The Tune trainable: one AutoMix run per trial, on 1 worker or data-parallel on several.

- ``workers == 1``: the trainer runs inside the Tune trial process itself (a Ray Train run would add
  ~10-12 s of start-up per trial); metrics and checkpoints go through ``ray.tune.report``, a failed
  trial is retried by Tune from its last checkpoint.
- ``workers > 1``: the trial builds a Ray Train ``TorchTrainer`` (gloo on CPU, NCCL on GPU) whose run
  is named after the Tune trial id, so after a worker failure (Train's ``FailureConfig``) or a
  restored study, Train continues from its own latest checkpoint. ``TuneReportCallback`` forwards
  rank 0's metrics and the checkpoint path to Tune.

Deterministic errors (bad config, missing data, non-finite loss) are remembered in the trial's folder and
not trained again on a retry (``failures.py``); a non-finite loss under fp16 may be retried once in
bf16/fp32 from scratch (``failure.numeric_retry``).

Either way the trainer's ``reporter.report(metrics, checkpoint_dir, artifacts)`` becomes one report
per epoch whose checkpoint folder holds ``state.pt`` plus ``artifacts/`` (config.yaml, mixed-sample
PNGs of that epoch), which the driver-side MLflow callback (``mlflow_callback.py``) logs.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import ray
import ray.train
import ray.tune

from automix.record import TAG_NUMERIC_RETRY
from automix.train import NonFiniteLossError

from .failures import DETERMINISTIC, PlacementTimeout, raise_if_remembered, remember_deterministic
from .study import resolve_config

log = logging.getLogger("studyrunner")

ARTIFACTS_DIR = "artifacts"  # inside each reported checkpoint
NODE_ID_KEY = "ray_node_id"
DEFAULT_TRAIN_FN = "automix.train:train"


@dataclass(frozen=True)
class TrialPlan:
    """Everything a trial needs besides its sampled values; pickled once into the trainable."""
    base: Mapping[str, Any]  # resolved nested run config
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    num_to_keep: int = 2
    experiment_path: str = ""  # the launch's folder in Ray storage (local, shared filesystem or URI)
    train_storage: str = ""  # storage_path of the Train runs (multi-worker trials)
    train_fn: str = DEFAULT_TRAIN_FN  # "module:function" with automix.train.train's signature
    fault_inject_epoch: int | None = None  # test-only: kill one worker once after this epoch
    fault_inject_rank: int | None = None  # which rank (default: the last)
    numeric_retry: str = "none"  # none | bf16 | fp32: rerun a non-finite fp16 trial once in this precision

    def trainer(self) -> Callable:
        module, _, name = self.train_fn.partition(":")
        return getattr(importlib.import_module(module), name)

    def resources(self) -> dict[str, float]:
        """What Tune reserves for the trial process itself."""
        if self.workers == 1:
            return {"cpu": self.cpus_per_worker, "gpu": self.gpus_per_worker}
        # The trial only drives a Train run whose workers reserve their own CPUs/GPUs; it must not hold
        # a CPU they need (2 workers x 1 CPU on a 2-CPU machine). Tune refuses an all-zero request, so
        # the trial asks for one byte of memory; max_concurrent_trials bounds how many run at once.
        return {"cpu": 0, "memory": 1}


# --------------------------------------------------------------------------- reporting

class RayReporter:
    """The trainer's reporter protocol on top of ``ray.tune.report`` / ``ray.train.report``."""

    def __init__(self, report: Callable, checkpoint_cls: type, *, rank: int, fault: "FaultInjection | None",
                 extra: Mapping[str, Any] | None = None):
        self._report = report
        self._extra = dict(extra or {})  # added to every result (the numeric retry's precision)
        self._checkpoint_cls = checkpoint_cls
        self._rank = rank
        self._fault = fault
        self._node_id = ray.get_runtime_context().get_node_id()

    def report(self, metrics: dict, checkpoint_dir: Path | None, artifacts: list[Path]) -> None:
        if self._fault is not None:
            self._fault.maybe_crash(int(metrics["epoch"]), self._rank)
        out = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
        out[NODE_ID_KEY] = self._node_id
        out.update(self._extra)
        if checkpoint_dir is None:  # ranks > 0: Train still needs every rank to report
            self._report(out)
            return
        stage = Path(tempfile.mkdtemp(prefix="automix-report-"))
        try:
            for f in Path(checkpoint_dir).iterdir():
                if f.is_file():
                    _link_or_copy(f, stage / f.name)
            if artifacts:
                (stage / ARTIFACTS_DIR).mkdir()
                for a in artifacts:
                    _link_or_copy(Path(a), stage / ARTIFACTS_DIR / Path(a).name)
            self._report(out, checkpoint=self._checkpoint_cls.from_directory(str(stage)))
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # no copy of a large state.pt when staging on the same filesystem
    except OSError:
        shutil.copy2(src, dst)


@dataclass(frozen=True)
class FaultInjection:
    """Test-only (``AUTOMIX_FAULT_INJECT_EPOCH``): ``os._exit(1)`` the worker of ``rank`` after it trained
    ``epoch`` and before it reports it, once per launch: the first trial to get there creates the marker
    file (atomically) in the experiment folder and dies; its retry, and every other trial, carry on."""
    epoch: int
    rank: int
    marker: str
    trial_id: str

    def maybe_crash(self, epoch: int, rank: int) -> None:
        if epoch != self.epoch or rank != self.rank:
            return
        os.makedirs(os.path.dirname(self.marker), exist_ok=True)
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{self.trial_id}\n")
        log.warning("AUTOMIX_FAULT_INJECT_EPOCH: killing this worker (rank %d) of trial %s after epoch %d",
                    rank, self.trial_id, epoch)
        os._exit(1)


def _fault(plan: TrialPlan, trial_id: str) -> FaultInjection | None:
    if plan.fault_inject_epoch is None:
        return None
    if "://" in plan.experiment_path:
        raise ValueError("AUTOMIX_FAULT_INJECT_EPOCH needs a local or shared-filesystem --storage-path")
    rank = plan.workers - 1 if plan.fault_inject_rank is None else plan.fault_inject_rank
    # In the launch's storage folder: the same file for every attempt of every trial, on every node
    # that shares the storage (a trial's local folder differs between attempts).
    return FaultInjection(plan.fault_inject_epoch, rank,
                          os.path.join(plan.experiment_path, f"fault_injected_epoch{plan.fault_inject_epoch}"),
                          trial_id)


# --------------------------------------------------------------------------- the Tune trainable

def automix_trial(config: dict[str, Any], plan: TrialPlan) -> None:
    """Tune function trainable; ``config`` holds the sampled ``{dotted key: value}``."""
    trial_id = ray.tune.get_context().get_trial_id()
    _quiet_worker_console()
    raise_if_remembered(plan.experiment_path, trial_id)  # a retry of a deterministic error
    try:
        cfg = resolve_config(plan.base, config)  # the one resolution of this trial's config
        if plan.workers == 1:
            fault = _fault(plan, trial_id)
            _with_numeric_retry(lambda c, extra, fresh: _train_here(c, plan, fault, extra, fresh), cfg, plan)
        else:
            _train_with_ray_train(cfg, plan, trial_id, _fault(plan, trial_id))
    except DETERMINISTIC as exc:
        remember_deterministic(plan.experiment_path, trial_id, exc)
        raise


def _quiet_worker_console() -> None:
    """Keep two kinds of noise of a trial's process off the driver's console: Ray Train's line per saved
    checkpoint (every epoch of every trial), and the "Exception ignored in ... SystemExit" traceback
    Python prints when Ray's SIGTERM handler, stopping the process at the end of a trial, happens to
    raise inside a weakref callback (python/cpython#95959). Python ignores that SystemExit either way."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    sys.unraisablehook = _unraisable_except_exit


def _unraisable_except_exit(unraisable) -> None:
    """``sys.unraisablehook``: Python's own report of an exception it cannot raise, unless a SystemExit."""
    if not (isinstance(unraisable.exc_type, type) and issubclass(unraisable.exc_type, SystemExit)):
        sys.__unraisablehook__(unraisable)


def _with_numeric_retry(train: Callable[[Any, dict, bool], None], cfg, plan: TrialPlan) -> None:
    """``train(cfg, extra_result_keys, fresh)``; a non-finite loss under fp16 reruns it once, from scratch, in
    ``plan.numeric_retry`` precision, every later result saying so (MLflow tag numeric_retry)."""
    try:
        train(cfg, {}, False)
    except NonFiniteLossError as exc:
        if plan.numeric_retry == "none" or cfg.train.amp != "fp16":
            raise
        log.warning("non-finite loss under fp16 (%s); retrying this trial once from scratch in %s",
                    exc, plan.numeric_retry)
        amp = "none" if plan.numeric_retry == "fp32" else plan.numeric_retry
        retried = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, amp=amp))
        train(retried, {TAG_NUMERIC_RETRY: plan.numeric_retry}, True)


def _set_threads(cpus: float) -> None:
    import torch

    # One intra-op thread per reserved CPU: oversubscribed threads spin and can make a step several
    # times slower on small CPU machines.
    torch.set_num_threads(max(1, int(cpus)))


def _train_here(cfg, plan: TrialPlan, fault: FaultInjection | None, extra: dict, fresh: bool) -> None:
    _set_threads(plan.cpus_per_worker)
    work = Path(tempfile.mkdtemp(prefix="automix-trial-"))
    try:
        resume_from = None if fresh else _restore(ray.tune.get_checkpoint(), work / "resume")
        reporter = RayReporter(ray.tune.report, ray.tune.Checkpoint, rank=0, fault=fault, extra=extra)
        plan.trainer()(cfg, work / "output", reporter=reporter, resume_from=resume_from)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _restore(checkpoint, into: Path) -> Path | None:
    if checkpoint is None:
        return None
    checkpoint.to_directory(str(into))  # a local copy: Ray may prune that checkpoint while we train
    return into


def _train_with_ray_train(cfg, plan: TrialPlan, trial_id: str, fault: FaultInjection | None) -> None:
    """Retries belong to Tune (the guard decides which): Train gives up at the first failure, and Tune's
    retry builds this trainer again under the same name, which continues from Train's latest checkpoint."""
    from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError
    from ray.train.v2.api.exceptions import ControllerError, TrainingFailedError
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = plan.gpus_per_worker > 0
    per_worker = {"CPU": plan.cpus_per_worker, **({"GPU": plan.gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"cfg": cfg, "plan": plan, "trial_id": trial_id, "fault": fault},
        scaling_config=ray.train.ScalingConfig(num_workers=plan.workers, use_gpu=use_gpu,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=trial_id,  # stable: a restarted trial finds this run's checkpoints and continues
            storage_path=plan.train_storage,
            # controller_failure_limit=0: a worker group that cannot start within the placement timeout
            # (RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S) is an error, not a retry every minute forever.
            failure_config=ray.train.FailureConfig(max_failures=0, controller_failure_limit=0),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=plan.num_to_keep),
            callbacks=[TuneReportCallback()],
        ),
    )
    try:
        trainer.fit()
    except TrainingFailedError as exc:
        raise_if_remembered(plan.experiment_path, trial_id)  # a worker hit a deterministic error
        if isinstance(exc, ControllerError) and isinstance(exc.controller_failure, WorkerGroupStartupTimeoutError):
            timeout = PlacementTimeout(f"resources.placement_timeout_s: the {plan.workers} workers of trial "
                                       f"{trial_id} ({per_worker} each) were not placed in time")
            remember_deterministic(plan.experiment_path, trial_id, timeout)
            raise timeout from None
        raise


def _train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: the trainer joins the process group Train set up (gloo / NCCL)."""
    plan: TrialPlan = loop_config["plan"]
    trial_id = loop_config["trial_id"]
    _quiet_worker_console()
    raise_if_remembered(plan.experiment_path, trial_id)
    _set_threads(plan.cpus_per_worker)
    rank = ray.train.get_context().get_world_rank()
    device = None
    if plan.gpus_per_worker > 0:
        from ray.train.torch import get_device

        device = get_device()  # this worker's GPU (Train sets CUDA_VISIBLE_DEVICES for the group)

    def train(cfg, extra: dict, fresh: bool) -> None:
        work = Path(tempfile.mkdtemp(prefix=f"automix-rank{rank}-"))
        try:
            resume_from = None if fresh else _restore(ray.train.get_checkpoint(), work / "resume")
            reporter = RayReporter(ray.train.report, ray.train.Checkpoint, rank=rank, fault=loop_config["fault"],
                                   extra=extra)
            plan.trainer()(cfg, work / "output", reporter=reporter, resume_from=resume_from, device=device)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    try:
        _with_numeric_retry(train, loop_config["cfg"], plan)
    except DETERMINISTIC as exc:
        remember_deterministic(plan.experiment_path, trial_id, exc)
        raise
