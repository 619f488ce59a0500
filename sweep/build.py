"""From a validated ``RunConfig`` to a ready ``Trainer``: data, samplers, model, losses, optimiser.

``build_run(cfg, rank, world_size)`` is shared by the in-process run and the Ray Train workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hybridlt.data.dataset import DATASETS
from hybridlt.data.long_tail import class_counts, shot_groups
from hybridlt.data.samplers import create_sampler
from hybridlt.model.curriculum import Curriculum
from hybridlt.model.evaluate import accuracy_report, count_eval, diagnostics_report
from hybridlt.model.hybrid import HybridObjective, create_hybrid_net
from hybridlt.model.losses import build_classifier_loss, build_contrastive_loss, default_head
from hybridlt.model.optim import build_optimizer, build_scheduler
from hybridlt.model.train import Trainer
from hybridlt.sweep.config import ConfigError, DataConfig, RunConfig


@dataclass
class RunParts:
    config: RunConfig
    trainer: Trainer
    class_names: list[str]
    class_counts: list[int]
    groups: dict[str, list[int]]


def resolve_device(name: str, rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device: 'cuda' requested but this machine has no CUDA device; allowed here: "
                              "'cpu' or 'auto'")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def load_dataset(cfg: DataConfig):
    """The dataset a config names (``DATASETS``); values the data cannot satisfy become a ``ConfigError``."""
    try:
        data = DATASETS.build(cfg.dataset, **cfg.model_dump())
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if len(data.test_labels) == 0:
        raise ConfigError(f"data: dataset {cfg.dataset!r} has no test (validation) image; every accuracy "
                          f"would be missing. Give it a non-empty test set or val_list")
    return data


def build_run(cfg: RunConfig, rank: int = 0, world_size: int = 1, device: torch.device | None = None,
              data=None, wrap=None) -> RunParts:
    """Everything to train ``cfg`` on this rank. ``wrap(objective)`` may wrap it (DDP)."""
    device = device or resolve_device(cfg.train.device, rank)
    if device.type == "cuda":  # fixed input shapes: let cuDNN time its algorithms once and keep the fastest
        torch.backends.cudnn.benchmark = True
    if cfg.train.threads is not None:  # the sweep trial's count, in an exported best config: its numbers
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.seed)
    data = data if data is not None else load_dataset(cfg.data)
    labels = data.train_labels.numpy()
    counts = class_counts(labels, data.num_classes)
    groups = shot_groups(counts, cfg.data.many_above, cfg.data.few_below)
    loader = dict(device=device, batch_size=cfg.train.batch_size, world_size=world_size,
                  augment=cfg.augment.model_dump(), image_size=cfg.data.image_size,
                  loader_workers=cfg.data.loader_workers)
    samplers = [create_sampler(kind, labels, cfg.train.batch_size, seed=cfg.seed, rank=rank, world_size=world_size,
                               salt=salt, positives=cfg.sampler.positives)
                for kind, salt in ((cfg.sampler.contrastive, 1), (cfg.sampler.classifier, 2))]
    streams = data.train_streams(*samplers, seed=cfg.seed, **loader)

    net = create_hybrid_net(cfg.model.backbone, data.num_classes, data.in_channels, cfg.model.proj_dim,
                            cfg.model.proj_hidden, cfg.model.classifier or default_head(cfg.loss.classifier))
    loss_fields = cfg.loss.model_dump(exclude={"contrastive", "classifier"})
    contrastive = build_contrastive_loss(cfg.loss.contrastive, data.num_classes, cfg.model.proj_dim, **loss_fields)
    cls_loss = build_classifier_loss(cfg.loss.classifier, counts, cfg.train.epochs, **loss_fields)
    objective = HybridObjective(net, contrastive, cls_loss, cfg.model.bn_streams).to(device)
    if device.type == "cuda" and cfg.train.channels_last:
        objective = objective.to(memory_format=torch.channels_last)
    o = cfg.optim
    optimizer = build_optimizer(objective, o.lr, o.momentum, o.weight_decay, o.nesterov)
    scheduler = build_scheduler(optimizer, streams.steps_per_epoch, cfg.train.epochs, o.schedule, o.warmup_epochs,
                                o.milestones, o.gamma)
    curriculum = Curriculum(epochs=cfg.train.epochs, **cfg.curriculum.model_dump())
    if wrap is not None:
        objective = wrap(objective)
    if cfg.train.compile:
        mode = None if cfg.train.compile in (True, "default") else cfg.train.compile
        objective = torch.compile(objective, mode=mode)
    batches = data.eval_batches(rank=rank, **{**loader, "batch_size": cfg.train.eval_batch_size})
    amp_dtype = torch.bfloat16 if cfg.train.amp and device.type == "cuda" else None

    def evaluate(net):
        sums = count_eval(net, batches(), data.num_classes, device, amp_dtype, counts, groups)
        report = accuracy_report(sums.correct.tolist(), sums.total.tolist(), groups)
        return report | diagnostics_report(sums, groups)

    trainer = Trainer(objective, optimizer, scheduler, streams, curriculum, evaluate, cfg.train.epochs, device,
                      amp=cfg.train.amp, checkpoint_every=cfg.train.checkpoint_every,
                      eval_every=cfg.train.eval_every)
    return RunParts(cfg, trainer, list(data.class_names), counts, groups)
