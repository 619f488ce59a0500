"""Per-class evaluation of the classifier branch with many / medium / few group accuracies, and the
long-tail diagnostics read off the same logits: where each group's test images go (group confusion),
each class's classifier weight norm, and what post-hoc logit adjustment and τ-normalisation would give.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

GROUP_ORDER = ("many", "medium", "few")
TAU = 1.0  # logit adjustment: logits - τ·log prior (Menon et al. 2021); τ-norm: w / ||w||^τ (Kang et al. 2020)


@dataclass
class EvalCounts:
    """Sums over the test set, each a float64 tensor: per class ``[C]`` correct and total (plain argmax),
    correct after logit adjustment and after τ-normalisation; ``confusion[true group, predicted group]``
    ``[3, 3]`` in ``GROUP_ORDER``; and the classifier's weight norm per class (NaN without a classifier)."""

    correct: torch.Tensor
    total: torch.Tensor
    la_correct: torch.Tensor | None = None
    taunorm_correct: torch.Tensor | None = None
    confusion: torch.Tensor | None = None
    weight_norm: torch.Tensor | None = None


def _group_index(groups: Mapping[str, Sequence[int]], num_classes: int, device: torch.device) -> torch.Tensor:
    """``[C]`` long: each class's position in ``GROUP_ORDER`` (a class in no group counts as medium)."""
    index = torch.ones(num_classes, dtype=torch.long)
    for g, classes in groups.items():
        if g in GROUP_ORDER and len(classes):
            index[torch.as_tensor(list(classes), dtype=torch.long)] = GROUP_ORDER.index(g)
    return index.to(device)


def _classifier_terms(net: nn.Module, num_classes: int, device: torch.device):
    """``(weight norm [C], bias [C] or None, divide_by_norm)`` of ``net.classifier``: a linear layer's logits
    are divided by the norm after removing its bias; a cosine classifier is normalised already."""
    layer = getattr(net, "classifier", None)
    weight = getattr(layer, "weight", None)
    if weight is None or weight.ndim != 2 or weight.shape[0] != num_classes:
        return torch.full((num_classes,), math.nan, dtype=torch.float64, device=device), None, False
    norm = weight.detach().float().norm(dim=1)
    bias = layer.bias.detach().float() if isinstance(layer, nn.Linear) and layer.bias is not None else None
    return norm.double(), bias, isinstance(layer, nn.Linear)


@torch.no_grad()
def count_eval(net: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int,
               device: torch.device, amp_dtype: torch.dtype | None = None, train_counts: Sequence[int] | None = None,
               groups: Mapping[str, Sequence[int]] | None = None) -> EvalCounts:
    """One pass over the test batches; with ``train_counts`` also the diagnostics (``groups`` for the
    confusion). Everything accumulates on ``device`` with ``index_add_`` (no host sync per batch) and is
    summed over ranks under DDP in one all-reduce."""
    C = num_classes
    sums = torch.zeros(4, C, dtype=torch.float64, device=device)  # correct, total, la_correct, taunorm_correct
    confusion = torch.zeros(len(GROUP_ORDER) ** 2, dtype=torch.float64, device=device)
    diagnose = train_counts is not None
    if diagnose:
        counts = torch.as_tensor(list(train_counts), dtype=torch.float32, device=device).clamp_min(1)
        log_prior = (counts / counts.sum()).log()
        norm, bias, divide = _classifier_terms(net, C, device)
        scale = norm.float().clamp_min(1e-12).pow(TAU) if divide else None
        group_of = _group_index(groups or {}, C, device)
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = net(x)
        pred = logits.argmax(1)
        sums[1].index_add_(0, y, torch.ones_like(y, dtype=torch.float64))  # no host sync, unlike bincount
        sums[0].index_add_(0, y, (pred == y).double())
        if diagnose:
            logits = logits.float()
            sums[2].index_add_(0, y, ((logits - TAU * log_prior).argmax(1) == y).double())
            if scale is not None:
                tn = (logits - bias if bias is not None else logits) / scale
                sums[3].index_add_(0, y, (tn.argmax(1) == y).double())
            else:
                sums[3].index_add_(0, y, (pred == y).double())
            confusion.index_add_(0, group_of[y] * len(GROUP_ORDER) + group_of[pred],
                                 torch.ones_like(y, dtype=torch.float64))
    if dist.is_available() and dist.is_initialized():
        flat = torch.cat([sums.flatten(), confusion])
        dist.all_reduce(flat)
        sums, confusion = flat[:4 * C].view(4, C), flat[4 * C:]
    if not diagnose:
        return EvalCounts(sums[0], sums[1])
    G = len(GROUP_ORDER)
    return EvalCounts(sums[0], sums[1], sums[2], sums[3], confusion.view(G, G), norm)


def count_correct(net: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                  num_classes: int, device: torch.device, amp_dtype: torch.dtype | None = None):
    """Per-class ``(correct, total)`` as float64 tensors ``[C]``, summed over ranks under DDP."""
    counts = count_eval(net, batches, num_classes, device, amp_dtype)
    return counts.correct, counts.total


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


def diagnostics_report(counts: EvalCounts, groups: Mapping[str, Sequence[int]]) -> dict:
    """The diagnostics as metrics: ``la_*`` / ``taunorm_*`` accuracies (overall, balanced, few), the group
    confusion as fractions of each true group's test images (``confusion_few_to_many`` ...), and the
    per-class lists ``per_class_la_acc``, ``per_class_taunorm_acc``, ``per_class_weight_norm``."""
    if counts.la_correct is None:
        return {}
    total = counts.total.tolist()
    out: dict = {}
    for prefix, correct in (("la", counts.la_correct), ("taunorm", counts.taunorm_correct)):
        report = accuracy_report(correct.tolist(), total, groups)
        out |= {f"{prefix}_acc": report["acc"], f"{prefix}_balanced_acc": report["balanced_acc"],
                f"{prefix}_few_acc": report.get("few_acc"), f"per_class_{prefix}_acc": report["per_class_acc"]}
    confusion = counts.confusion.tolist()
    for i, true in enumerate(GROUP_ORDER):
        row_total = sum(confusion[i])
        for j, predicted in enumerate(GROUP_ORDER):
            out[f"confusion_{true}_to_{predicted}"] = confusion[i][j] / row_total if row_total else None
    out["per_class_weight_norm"] = counts.weight_norm.tolist()
    return out
