"""From a validated ``RunConfig`` to a ready ``Trainer``: data, samplers, model, losses, optimiser.

``build_run(cfg, rank, world_size)`` is shared by the in-process run and the Ray Train workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hybridlt.data.augment import BatchAugment
from hybridlt.data.cifar import load_cifar_lt
from hybridlt.data.digits import load_digits_lt
from hybridlt.data.image_list import (
    ImageListData,
    TwoViews,
    eval_transform,
    load_image_lists,
    train_transform,
)
from hybridlt.data.long_tail import class_counts, shot_groups
from hybridlt.data.memory import InMemoryData
from hybridlt.data.samplers import create_sampler
from hybridlt.data.streams import InMemoryStreams, LoaderStreams
from hybridlt.model.curriculum import Curriculum
from hybridlt.model.evaluate import accuracy_report, count_correct
from hybridlt.model.hybrid import HybridObjective, create_hybrid_net
from hybridlt.model.losses import COSINE_CLASSIFIER_LOSSES, build_classifier_loss, build_contrastive_loss
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


def load_dataset(cfg: DataConfig) -> InMemoryData | ImageListData:
    """The dataset a config names; values the data cannot satisfy become a ``ConfigError``."""
    try:
        return _load_dataset(cfg)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _load_dataset(cfg: DataConfig) -> InMemoryData | ImageListData:
    if cfg.dataset == "digits_lt":
        return load_digits_lt(cfg.imbalance_ratio, cfg.max_count or 120, cfg.test_per_class, cfg.profile, cfg.seed)
    if cfg.dataset in ("cifar10_lt", "cifar100_lt"):
        return load_cifar_lt(cfg.dataset.removesuffix("_lt"), cfg.root, cfg.imbalance_ratio, cfg.profile,
                             cfg.max_count, cfg.seed, cfg.download)
    return load_image_lists(cfg.train_list, cfg.val_list, cfg.root)


def _eval_batches(data, cfg: RunConfig, rank: int, world_size: int, normalize, device):
    """A function returning this rank's share of the test set as ``(images, labels)`` batches."""
    if isinstance(data, InMemoryData):
        x, y = data.test_images[rank::world_size].to(device), data.test_labels[rank::world_size].to(device)
        bs = cfg.train.eval_batch_size
        return lambda: ((normalize(x[i:i + bs]), y[i:i + bs]) for i in range(0, len(y), bs))
    data.test.transform = eval_transform(cfg.data.image_size)
    data.test.decode_size = int(round(cfg.data.image_size / 0.875))
    data.test.max_pixels = cfg.data.max_image_pixels
    subset = torch.utils.data.Subset(data.test, range(rank, len(data.test), world_size))
    loader = torch.utils.data.DataLoader(subset, batch_size=cfg.train.eval_batch_size,
                                         num_workers=cfg.data.loader_workers, pin_memory=device.type == "cuda")
    return lambda: iter(loader)


def _streams(data, cfg: RunConfig, labels, rank: int, world_size: int, device: torch.device):
    s, a = cfg.sampler, cfg.augment
    common = dict(seed=cfg.seed, rank=rank, world_size=world_size, positives=s.positives)
    con = create_sampler(s.contrastive, labels, cfg.train.batch_size, salt=1, **common)
    ce = create_sampler(s.classifier, labels, cfg.train.batch_size, salt=2, **common)
    if isinstance(data, InMemoryData):
        mean, std = data.channel_stats()
        augment = BatchAugment(mean, std, a.crop_padding, a.flip, a.grayscale_p, tuple(a.jitter), a.jitter_p)
        return InMemoryStreams(data, con, ce, augment, cfg.seed, device), augment.normalize
    size = cfg.data.image_size
    plain = train_transform(size, None, grayscale_p=a.grayscale_p, flip=a.flip)
    jittered = train_transform(size, tuple(a.jitter), a.jitter_p, a.grayscale_p, a.flip)
    con_ds = type(data.train)(data.train.paths, data.train.labels, TwoViews(jittered, plain), decode_size=size,
                            max_pixels=cfg.data.max_image_pixels)
    ce_ds = type(data.train)(data.train.paths, data.train.labels, plain, decode_size=size,
                             max_pixels=cfg.data.max_image_pixels)
    workers = cfg.data.loader_workers
    loader = dict(batch_size=cfg.train.batch_size // world_size, num_workers=workers, pin_memory=device.type == "cuda",
                  persistent_workers=workers > 0, drop_last=False)
    streams = LoaderStreams(torch.utils.data.DataLoader(con_ds, sampler=con, **loader),
                            torch.utils.data.DataLoader(ce_ds, sampler=ce, **loader), device)
    return streams, None


def build_run(cfg: RunConfig, rank: int = 0, world_size: int = 1, device: torch.device | None = None,
              data: InMemoryData | ImageListData | None = None, wrap=None) -> RunParts:
    """Everything to train ``cfg`` on this rank. ``wrap(objective)`` may wrap it (DDP)."""
    device = device or resolve_device(cfg.train.device, rank)
    torch.manual_seed(cfg.seed)
    data = data if data is not None else load_dataset(cfg.data)
    labels = data.train_labels.numpy() if hasattr(data.train_labels, "numpy") else data.train_labels
    counts = class_counts(labels, data.num_classes)
    groups = shot_groups(counts, cfg.data.many_above, cfg.data.few_below)
    streams, normalize = _streams(data, cfg, labels, rank, world_size, device)

    classifier = cfg.model.classifier or ("cosine" if cfg.loss.classifier in COSINE_CLASSIFIER_LOSSES else "linear")
    net = create_hybrid_net(cfg.model.backbone, data.num_classes, data.in_channels, cfg.model.proj_dim,
                            cfg.model.proj_hidden, classifier)
    contrastive = build_contrastive_loss(cfg.loss.contrastive, data.num_classes, cfg.model.proj_dim,
                                         cfg.loss.temperature, cfg.loss.prototypes_per_class)
    cls_loss = build_classifier_loss(cfg.loss.classifier, counts, cfg.train.epochs,
                                     **cfg.loss.model_dump(exclude={"contrastive", "classifier"}))
    objective = HybridObjective(net, contrastive, cls_loss).to(device)
    if device.type == "cuda" and cfg.train.channels_last:
        objective = objective.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(objective, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay,
                                cfg.optim.nesterov)
    scheduler = build_scheduler(optimizer, streams.steps_per_epoch, cfg.train.epochs, cfg.optim.schedule,
                                cfg.optim.warmup_epochs, cfg.optim.milestones, cfg.optim.gamma)
    curriculum = Curriculum(cfg.curriculum.kind, cfg.train.epochs, cfg.curriculum.power, cfg.curriculum.value,
                            cfg.curriculum.switch, cfg.curriculum.low)
    if wrap is not None:
        objective = wrap(objective)
    if cfg.train.compile:
        objective = torch.compile(objective)
    batches = _eval_batches(data, cfg, rank, world_size, normalize, device)
    amp_dtype = torch.bfloat16 if cfg.train.amp and device.type == "cuda" else None

    def evaluate(net):
        correct, total = count_correct(net, batches(), data.num_classes, device, amp_dtype)
        return accuracy_report(correct.tolist(), total.tolist(), groups)

    trainer = Trainer(objective, optimizer, scheduler, streams, curriculum, evaluate, cfg.train.epochs, device,
                      amp=cfg.train.amp, checkpoint_every=cfg.train.checkpoint_every)
    return RunParts(cfg, trainer, list(data.class_names), counts, groups)
