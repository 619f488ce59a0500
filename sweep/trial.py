"""One sweep trial: the training loop under Ray Tune, directly or inside a Ray Train TorchTrainer.

``trial_main(params, ctx)`` is the Tune trainable. With ``ctx.use_train`` it builds a
``TorchTrainer`` with ``workers`` DDP workers that each run ``worker_loop``; otherwise it runs
``worker_loop`` itself (one process, no worker group). Rank 0 writes the epoch and per-class rows
to the results store as it reports, so a trial stopped by ASHA keeps everything it reported.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from hybridlt.model.checkpoint import CheckpointError, load_checkpoint, load_newest_readable, save_checkpoint
from hybridlt.sweep.build import build_run
from hybridlt.sweep.config import RunConfig, validate_run_config
from hybridlt.sweep.results import ResultsWriter, has_trial_row
from hybridlt.sweep.spec import apply_params
from hybridlt.sweep.store import Location

CKPT_NAME = "checkpoint.pt"


@dataclass
class TrialContext:
    """What every trial needs from the driver (pickled to the Ray workers)."""

    base: RunConfig
    results_root: object  # a Location (pickled to the workers) or a path or URI
    train_storage: str
    use_train: bool
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 2
    variants: dict | None = None  # ablations: variant name -> its --set overrides


def _scalars(metrics: dict) -> dict:
    """Tune-facing metrics: numbers only, missing groups as NaN (ASHA and Optuna need numbers)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, list):
            continue
        out[key] = math.nan if value is None else value
    return out


def _maybe_inject_fault(epoch: int, rank: int) -> None:
    """Fault injection for the reliability tests: ``HYBRIDLT_FAULT_KILL=epoch:rank:marker`` makes that
    rank's process die at that epoch, once (the marker file records that it happened)."""
    spec = os.environ.get("HYBRIDLT_FAULT_KILL")
    if not spec:
        return
    at_epoch, at_rank, marker = spec.split(":", 2)
    if epoch == int(at_epoch) and rank == int(at_rank) and not os.path.exists(marker):
        Path(marker).write_text(f"killed rank {rank} at epoch {epoch}\n")
        os._exit(1)


def restore_state(checkpoint) -> dict | None:
    """The newest readable state among Ray's checkpoint and the older ones beside it.

    An unreadable checkpoint (truncated, corrupted) is named in a warning and skipped; with none
    readable the trial starts over, and says so.
    """
    folder = Location(checkpoint.filesystem, checkpoint.path)
    parent = Location(folder.fs, folder.path.rsplit("/", 1)[0])
    infos = parent.fs.get_file_info(pafs.FileSelector(parent.path)) if parent.is_dir() else []
    older = sorted((i.path for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_")
                    and i.path != folder.path), reverse=True)
    candidates = [Location(folder.fs, path) / CKPT_NAME for path in [folder.path, *older]]
    state = load_newest_readable(candidates, lambda line: print(line, file=sys.stderr, flush=True), _load_location)
    if state is None:
        print("warning: no readable checkpoint; the trial starts from epoch 1", file=sys.stderr, flush=True)
    return state


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


def worker_loop(config: dict) -> None:
    """Runs on every Train worker (``api='train'``) or in the trial itself (``api='tune'``)."""
    import torch

    _quiet_ray()

    cfg = validate_run_config(config["cfg"], "trial")
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
    checkpoint = api.get_checkpoint()
    if checkpoint is not None:
        state = restore_state(checkpoint)
        if state is not None:
            parts.trainer.load_state_dict(state)
    writer = ResultsWriter(config["results_root"]) if rank == 0 else None
    trial_id = config["trial_id"]

    def report(metrics: dict, state: dict | None) -> None:
        _maybe_inject_fault(metrics["epoch"], rank)
        if writer is not None:
            writer.epoch(trial_id, metrics, parts.class_names, parts.class_counts)
        scalars = _scalars(metrics)
        if state is not None and rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(state, Path(tmp) / CKPT_NAME)
                api.report(scalars, checkpoint=api.Checkpoint.from_directory(tmp))
        else:
            api.report(scalars)

    parts.trainer.fit(report)


def trial_main(params: dict, ctx: TrialContext) -> None:
    """The Tune trainable: resolve the trial's config, then train it (Train workers or in place)."""
    import ray.tune as tune

    _quiet_ray()
    trial_id = tune.get_context().get_trial_id()
    if has_trial_row(ctx.results_root, trial_id):
        return  # finished before a driver crash that Tune's last snapshot did not see: never re-run it
    cfg = apply_params(ctx.base, params, ctx.variants)
    loop_config = {"cfg": cfg.model_dump(mode="json"), "trial_id": trial_id, "results_root": ctx.results_root}
    if not ctx.use_train:
        worker_loop({**loop_config, "api": "tune"})
        return
    import ray.train as train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = ctx.gpus_per_worker > 0
    resources = {"CPU": ctx.cpus_per_worker, **({"GPU": ctx.gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={**loop_config, "api": "train"},
        scaling_config=train.ScalingConfig(num_workers=ctx.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=train.RunConfig(
            name=trial_id, storage_path=ctx.train_storage,
            failure_config=train.FailureConfig(max_failures=ctx.max_failures),
            checkpoint_config=train.CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()
