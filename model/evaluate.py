"""Per-class evaluation of the classifier branch with many / medium / few group accuracies."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.distributed as dist


@torch.no_grad()
def count_correct(net: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                  num_classes: int, device: torch.device, amp_dtype: torch.dtype | None = None):
    """Per-class ``(correct, total)`` as float64 tensors ``[C]``, summed over ranks under DDP."""
    correct = torch.zeros(num_classes, dtype=torch.float64, device=device)
    total = torch.zeros(num_classes, dtype=torch.float64, device=device)
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            pred = net(x).argmax(1)
        total.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))  # no host sync, unlike bincount
        correct.index_add_(0, y, (pred == y).double())
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(correct)
        dist.all_reduce(total)
    return correct, total


def accuracy_report(correct: Sequence[float], total: Sequence[float],
                    groups: Mapping[str, Sequence[int]]) -> dict:
    """Overall (top-1), balanced (mean of per-class), per-class and per-group accuracies.

    A class with no test image has accuracy NaN and is left out of the means; a group with
    no class (or none tested) is ``None``, never 0.
    """
    correct = [float(c) for c in correct]
    total = [float(t) for t in total]
    per_class = [c / t if t > 0 else math.nan for c, t in zip(correct, total, strict=True)]
    tested = [a for a in per_class if not math.isnan(a)]
    out = {
        "acc": sum(correct) / sum(total) if sum(total) else math.nan,
        "balanced_acc": sum(tested) / len(tested) if tested else math.nan,
        "per_class_acc": per_class,
    }
    for name, classes in groups.items():
        vals = [per_class[c] for c in classes if not math.isnan(per_class[c])]
        out[f"{name}_acc"] = sum(vals) / len(vals) if vals else None
    return out
