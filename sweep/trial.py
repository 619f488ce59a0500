"""One sweep trial: the training loop under Ray Tune, directly or inside a Ray Train TorchTrainer.

``trial_main(params, ctx)`` is the Tune trainable. With ``ctx.use_train`` it builds a
``TorchTrainer`` with ``workers`` DDP workers that each run ``worker_loop``; otherwise it runs
``worker_loop`` itself (one process, no worker group). Rank 0 writes the epoch and per-class rows
to the results store as it reports, so a trial stopped by ASHA keeps everything it reported.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from hybridlt.errors import InputError
from hybridlt.model.checkpoint import CheckpointError, load_checkpoint, load_newest_readable, save_checkpoint
from hybridlt.sweep.build import build_run
from hybridlt.sweep.config import RunConfig, validate_run_config
from hybridlt.sweep.faults import pause_at
from hybridlt.sweep.isolation import reset_trial_process, trial_threads
from hybridlt.sweep.results import ResultsWriter
from hybridlt.sweep.spec import apply_params
from hybridlt.sweep.store import Location, write_text_atomic

CKPT_NAME = "checkpoint.pt"


FAILED_KEY = "hybridlt_failed"  # a trial's last result naming why it failed, without Tune retrying it
STORE_ID = "__trial"  # the config key naming a trial's id in the store (its own, or the one it continues)
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class StorageFullError(InputError):
    """The store cannot be written (full, over quota, read-only): names the path and what is free."""


def storage_error(exc: OSError, where) -> StorageFullError:
    """A one-line ``StorageFullError`` for ``exc`` raised while writing ``where``."""
    path = str(getattr(exc, "filename", None) or where)
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = f"{shutil.disk_usage(probe).free / 2**20:.1f} MiB free on {probe}"
    except OSError:
        free = "free space unknown"
    return StorageFullError(f"storage: cannot write {path}: {exc.strerror or exc} ({free}); the store is "
                            f"intact: free space, then continue with --resume")


def _deterministic() -> tuple[type[BaseException], ...]:
    from hybridlt.model.train import NonFiniteLossError

    return (NonFiniteLossError, InputError)  # a diverged loss; a bad config, a full store (one line each)


DETERMINISTIC = _deterministic()


@dataclass
class TrialContext:
    """What every trial needs from the driver (pickled to the Ray workers)."""

    base: RunConfig
    results_root: object  # a Location (pickled to the workers) or a path or URI
    train_storage: str  # <sweep>/train: the trials' checkpoints, one folder per trial id
    use_train: bool
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 2
    space: dict | None = None  # the spec's space: a 'variants' parameter resolves there
    milestones: tuple[int, ...] = ()  # the scheduler's rung epochs: evaluated and checkpointed always


def _scalars(metrics: dict) -> dict:
    """Tune-facing metrics: numbers only, missing groups as NaN (ASHA and Optuna need numbers)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, list):
            continue
        out[key] = math.nan if value is None else value
    return out


def _maybe_inject_fault(epoch: int, rank: int, trial_id: str = "") -> None:
    """Fault injection for the reliability tests: ``HYBRIDLT_FAULT_KILL=epoch:rank:marker`` makes that
    rank's process die at that epoch, once (the marker file records that it happened)."""
    spec = os.environ.get("HYBRIDLT_FAULT_KILL")
    if not spec:
        return
    at_epoch, at_rank, marker = spec.split(":", 2)
    if epoch == int(at_epoch) and rank == int(at_rank) and not os.path.exists(marker):
        Path(marker).write_text(f"killed rank {rank} at epoch {epoch} of trial {trial_id}\n")
        os._exit(1)


def restore_state(checkpoint) -> dict | None:
    """The newest readable state among Ray's checkpoint and the older ones beside it, or (given a
    ``Location``) among the ``checkpoint_*`` folders inside it (the one-process path's own).

    An unreadable checkpoint (truncated, corrupted) is named in a warning and skipped; with none
    readable the trial starts over, and says so.
    """
    if isinstance(checkpoint, Location):
        newest, parent = None, checkpoint
    else:
        newest = Location(checkpoint.filesystem, checkpoint.path)
        parent = Location(newest.fs, newest.path.rsplit("/", 1)[0])
    older = [loc for loc in _checkpoint_dirs(parent) if newest is None or loc.path != newest.path]
    folders = ([newest] if newest is not None else []) + older[::-1]
    if not folders:
        return None  # nothing saved yet: a first start
    candidates = [folder / CKPT_NAME for folder in folders]
    state = load_newest_readable(candidates, lambda line: print(line, file=sys.stderr, flush=True), _load_location)
    if state is None:
        print("warning: no readable checkpoint; the trial starts from epoch 1", file=sys.stderr, flush=True)
    return state


def _checkpoint_dirs(parent: Location) -> list[Location]:
    """The ``checkpoint_*`` folders in ``parent``, oldest first."""
    if not parent.is_dir():
        return []
    infos = parent.fs.get_file_info(pafs.FileSelector(parent.path))
    return [Location(parent.fs, path) for path in sorted(
        i.path for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_"))]


def _load_location(candidate: Location) -> dict:
    """``load_checkpoint`` for a file on any filesystem (a remote one is copied to a temp file first)."""
    if candidate.is_local:
        return load_checkpoint(candidate.path)
    try:
        data = candidate.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {candidate}: unreadable ({exc})") from exc
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, CKPT_NAME).write_bytes(data)
        return load_checkpoint(Path(tmp) / CKPT_NAME)


def _quiet_ray() -> None:
    """Ray's per-report INFO lines would drown the sweep's own progress; warnings still show."""
    logging.getLogger("ray").setLevel(logging.WARNING)


def loss_hyperparameters(objective) -> dict:
    """The scalar settings of the built loss modules, read back from the modules themselves
    (``{"contrastive": {"class": "SupConLoss", "temperature": 0.1, ...}, "classifier_loss": {...}}``)."""
    out = {}
    for name in ("contrastive", "classifier_loss"):
        module = getattr(objective, name, None)
        if module is None:
            continue
        fields = {k: v for k, v in vars(module).items() if not k.startswith("_") and k != "training"
                  and isinstance(v, bool | int | float | str)}
        out[name] = {"class": type(module).__name__, **fields}
    return out


def record_trained(root, trial_id: str, params: dict, cfg: RunConfig, objective) -> None:
    """Rank 0 records what the trial trains with: its parameters, its resolved config and the built
    losses' settings (``results/configs/<trial_id>.yaml``; written once, a restart trains the same)."""
    import yaml

    loc = Location.of(root) / "configs" / f"{trial_id}.yaml"
    if loc.exists():
        return
    doc = {"trial_id": trial_id, "params": params, "losses": loss_hyperparameters(objective),
           "config": cfg.model_dump(mode="json")}
    write_text_atomic(yaml.safe_dump(doc, sort_keys=False), loc)


def _own_checkpoints(ctx_storage: str, trial_id: str) -> Location:
    return Location.of(f"{ctx_storage.rstrip('/')}/{trial_id}")


def _save_own_checkpoint(folder: Location, state: dict, epoch: int, keep: int = 2) -> None:
    """The one-process path's checkpoints: ``<train>/<trial>/checkpoint_<epoch>/checkpoint.pt``, the
    same layout as Ray Train's, found again by a retried or continued trial (not Tune's trial folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(state, Path(tmp) / CKPT_NAME)
        (folder / f"checkpoint_{epoch:06d}" / CKPT_NAME).write_bytes((Path(tmp) / CKPT_NAME).read_bytes())
    for old in _checkpoint_dirs(folder)[:-keep]:
        old.fs.delete_dir(old.path)


def worker_loop(config: dict) -> None:
    """Runs on every Train worker (``api='train'``) or in the trial itself (``api='tune'``)."""
    import torch

    _quiet_ray()

    cfg = validate_run_config(config["cfg"], "trial")
    # a reused process (reuse_actors) starts each trial as a new one would: seeds, threads, caches
    reset_trial_process(cfg.seed, config.get("cpus", 1))
    if config["api"] == "train":
        import ray.train as api
        import ray.train.torch as rtt

        ctx = api.get_context()
        rank, world = ctx.get_world_rank(), ctx.get_world_size()
        device = torch.device("cpu") if cfg.train.device == "cpu" else rtt.get_device()
        if cfg.train.device == "cuda" and device.type != "cuda":
            raise RuntimeError("train.device: 'cuda' but this worker has no GPU (set resources.gpus_per_worker)")
        wrap = (lambda m: rtt.prepare_model(m, move_to_device=False)) if world > 1 else None
    else:
        import ray.tune as api

        rank, world, device, wrap = 0, 1, None, None
    parts = build_run(cfg, rank, world, device, wrap=wrap)
    parts.trainer.milestones = frozenset(config.get("milestones", ()))
    trial_id = config["trial_id"]
    own = _own_checkpoints(config["own_checkpoints"], trial_id) if config.get("own_checkpoints") else None
    checkpoint = own if own is not None else api.get_checkpoint()
    if checkpoint is not None:
        state = restore_state(checkpoint)
        if state is not None:
            parts.trainer.load_state_dict(state)
    writer = ResultsWriter(config["results_root"]) if rank == 0 else None
    if writer is not None and config.get("params") is not None:
        _guard(lambda: record_trained(config["results_root"], trial_id, config["params"], cfg, parts.trainer.core),
               config["results_root"])
    # an epoch without evaluation (train.eval_every) reports its accuracies as NaN: OptunaSearch
    # reads the metric from every result, ASHA only decides at rungs (always evaluated)
    eval_keys = ("acc", "balanced_acc", *(f"{g}_acc" for g in parts.groups))

    def report(metrics: dict, state: dict | None) -> None:
        _maybe_inject_fault(metrics["epoch"], rank, trial_id)
        if writer is not None:
            _guard(lambda: writer.epoch(trial_id, metrics, parts.class_names, parts.class_counts),
                   config["results_root"])
        scalars = {key: math.nan for key in eval_keys} | _scalars(metrics)
        if state is not None and rank == 0 and own is not None:
            _guard(lambda: _save_own_checkpoint(own, state, metrics["epoch"]), own)
            api.report(scalars)
        elif state is not None and rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(state, Path(tmp) / CKPT_NAME)
                api.report(scalars, checkpoint=api.Checkpoint.from_directory(tmp))
        else:
            api.report(scalars)

    parts.trainer.fit(report)


def _guard(write, where) -> None:
    """Run a store write; a full or read-only disk becomes one ``StorageFullError`` line."""
    try:
        write()
    except OSError as exc:
        if exc.errno in STORAGE_ERRNOS:
            raise storage_error(exc, where) from None
        raise


def fit_with_train(loop_config: dict, name: str, storage_path: str, workers: int, cpus_per_worker: float = 1.0,
                   gpus_per_worker: float = 0.0, max_failures: int = 2, keep: int = 2, callbacks=()):
    """The one Ray Train launcher: ``workers`` DDP workers running ``worker_loop``, resumed from the
    run ``name``'s last checkpoint under ``storage_path`` when it exists. Returns Train's ``Result``."""
    import ray.train as train
    from ray.train.torch import TorchTrainer

    use_gpu = gpus_per_worker > 0
    resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={**loop_config, "api": "train"},
        scaling_config=train.ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=train.RunConfig(
            name=name, storage_path=storage_path,
            failure_config=train.FailureConfig(max_failures=max_failures),
            checkpoint_config=train.CheckpointConfig(num_to_keep=keep),
            callbacks=list(callbacks),
        ),
    )
    return trainer.fit()


def trial_main(params: dict, ctx: TrialContext) -> None:
    """The Tune trainable: resolve the trial's config once, then train it (Train workers or in place).

    ``params[STORE_ID]`` names the trial in the store: Tune's own id, or on ``--resume`` the id of
    the unfinished trial this one continues (its epochs, checkpoints and recorded config).
    """
    import ray.tune as tune

    _quiet_ray()
    params = dict(params)
    trial_id = params.pop(STORE_ID, None) or tune.get_context().get_trial_id()
    pause_at("trial_start")
    cfg = apply_params(ctx.base, params, ctx.space)
    if cfg.train.threads is None:  # recorded as trained: an exported config then reproduces the trial
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(
            update={"threads": trial_threads(ctx.cpus_per_worker)})})
    loop_config = {"cfg": cfg.model_dump(mode="json"), "trial_id": trial_id, "results_root": ctx.results_root,
                   "params": params, "cpus": ctx.cpus_per_worker, "milestones": list(ctx.milestones)}
    if not ctx.use_train:
        try:
            worker_loop({**loop_config, "api": "tune", "own_checkpoints": ctx.train_storage})
        except DETERMINISTIC as exc:  # the same config fails the same way: a retry would only repeat it
            tune.report({FAILED_KEY: f"{type(exc).__name__}: {exc}"})
        return
    from ray.tune.integration.ray_train import TuneReportCallback

    result = fit_with_train(loop_config, trial_id, ctx.train_storage, ctx.workers, ctx.cpus_per_worker,
                            ctx.gpus_per_worker, ctx.max_failures, keep=2, callbacks=[TuneReportCallback()])
    if result.error:
        raise result.error
