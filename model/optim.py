"""SGD with momentum and a per-step learning-rate schedule (warm-up, then multistep or cosine)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from hybridlt.registry import Registry

# ``optim.schedule``: after warm-up, ``fn(epoch, progress, milestones, gamma) -> factor`` with
# ``progress`` in [0, 1] the fraction of post-warm-up steps done; each takes what it needs.
SCHEDULES = Registry("optim.schedule")


@SCHEDULES.register("multistep")
def multistep_schedule(epoch: int, milestones: Sequence[int], gamma: float) -> float:
    """``gamma`` to the number of milestones passed."""
    return gamma ** sum(epoch >= m for m in milestones)


@SCHEDULES.register("cosine")
def cosine_schedule(progress: float) -> float:
    """Half a cosine from 1 to 0 over the steps after warm-up."""
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@SCHEDULES.register("constant")
def constant_schedule() -> float:
    return 1.0


def build_optimizer(module: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 1e-4,
                    nesterov: bool = False) -> torch.optim.SGD:
    """SGD over ``module``'s parameters; prototypes (``*prototypes``) get no weight decay."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith("prototypes") else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    on_cuda = any(p.is_cuda for p in decay)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov,
                           fused=True if on_cuda else None, foreach=None if on_cuda else True)


def lr_factor(step: int, steps_per_epoch: int, epochs: int, schedule: str = "multistep",
              warmup_epochs: float = 0.0, milestones: Sequence[int] = (), gamma: float = 0.1) -> float:
    """The multiplier of the base lr at optimiser step ``step`` (0-based)."""
    SCHEDULES[schedule]  # noqa: B018  (an unknown name fails here, also during warm-up)
    warmup_steps = warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    total = max(1.0, epochs * steps_per_epoch - warmup_steps)
    return SCHEDULES.build(schedule, epoch=step // steps_per_epoch, progress=(step - warmup_steps) / total,
                           milestones=milestones, gamma=gamma)


def build_scheduler(optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int,
                    schedule: str = "multistep", warmup_epochs: float = 0.0,
                    milestones: Sequence[int] = (), gamma: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimiser step; its state (the step count) resumes exactly."""
    lr_factor(0, steps_per_epoch, epochs, schedule, warmup_epochs, milestones, gamma)  # validates

    def factor(step: int) -> float:
        return lr_factor(step, steps_per_epoch, epochs, schedule, warmup_epochs, milestones, gamma)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
