"""Losses of the hybrid network (PAPER.md, Eq. 2-5) and the classifier-branch registry.

Contrastive losses take ``features`` that are already L2-normalised, either ``[B, V, D]``
(B samples, V augmented views, D dims) or ``[N, D]`` where the prototype losses allow it,
and ``labels`` ``[B]`` (int64). All return a scalar tensor: the mean over anchors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Similarities in fp32 under autocast (bf16 in), unchanged in float64 (the reference tests)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _flatten_views(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, V, D]`` + ``[B]`` -> ``[B*V, D]`` + ``[B*V]`` (view-major per sample); ``[N, D]`` passes."""
    if features.dim() == 3:
        views = features.shape[1]
        return features.reshape(-1, features.shape[-1]), labels.repeat_interleave(views)
    if features.dim() == 2:
        return features, labels
    raise ValueError(f"features: expected [B, V, D] or [N, D], got shape {tuple(features.shape)}")


class SupConLoss(nn.Module):
    """Supervised contrastive loss (Eq. 2-3).

    ``forward(features [B, V, D], labels [B]) -> scalar``. Every view is an anchor; its
    positives are all other views with the same label (its own other view included), its
    denominator runs over all other views. Averaged over the anchors that have at least
    one positive; no base-temperature factor.

    The positive term needs no pairwise mask: the sum of an anchor's positive logits is
    ``z_i . (S_{y_i} - z_i) / t`` with ``S_c`` the sum of class c's embeddings, so only the
    log-sum-exp over all pairs is O((B*V)^2). With ``num_classes`` the class sums come from
    one scatter (no host sync); without it, from a same-label matrix.
    """

    def __init__(self, temperature: float = 0.1, num_classes: int | None = None):
        super().__init__()
        self.temperature = temperature
        self.num_classes = num_classes

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z, y = _flatten_views(features, labels)
        n = z.shape[0]
        zf = _at_least_fp32(z)
        if n < 2:  # no pair at all: no anchor has a positive
            return zf.sum() * 0.0
        logits = _at_least_fp32(z @ z.T) / self.temperature
        logits.fill_diagonal_(float("-inf"))  # an anchor is not in its own denominator
        log_denominator = torch.logsumexp(logits, dim=1)
        if self.num_classes:
            class_sums = zf.new_zeros(self.num_classes, zf.shape[1]).index_add_(0, y, zf)
            same_sum = class_sums[y]
            same_count = zf.new_zeros(self.num_classes).index_add_(0, y, zf.new_ones(len(y)))[y]
        else:
            same = (y[:, None] == y[None, :]).to(zf.dtype)
            same_sum, same_count = same @ zf, same.sum(1)
        num_pos = same_count - 1
        pos_logits = (zf * (same_sum - zf)).sum(1) / self.temperature
        per_anchor = log_denominator - pos_logits / num_pos.clamp(min=1)
        has_pos = num_pos > 0
        # An anchor without positives contributes nothing and never NaN.
        return torch.where(has_pos, per_anchor, 0.0).sum() / has_pos.sum().clamp(min=1)


class MPSCLoss(nn.Module):
    """Multi-prototype supervised contrastive loss (Eq. 5, PAPER.md's definition).

    Parameter ``prototypes`` ``[C, M, D]`` (normalised where used).
    ``forward(features [B, V, D] or [N, D], labels) -> scalar``:
    ``L_i = -sum_k w_ik log(exp(z_i.p_{y_i}^k / t) / sum_{c != y_i} sum_k' exp(z_i.p_c^k' / t))``,
    ``w_ik = softmax_k(z_i.p_{y_i}^k / t)`` without gradient. One matrix product against all
    prototypes: memory O(N * C * M), independent of how many same-class samples a batch holds.
    """

    def __init__(self, num_classes: int, feat_dim: int, prototypes_per_class: int = 1,
                 temperature: float = 0.1):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes: {num_classes} given; prototype losses need at least 2")
        self.temperature = temperature
        self.prototypes = nn.Parameter(torch.randn(num_classes, prototypes_per_class, feat_dim))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z, y = _flatten_views(features, labels)
        c, m, d = self.prototypes.shape
        protos = F.normalize(self.prototypes, dim=-1).reshape(c * m, d)
        logits = _at_least_fp32(z @ protos.T).reshape(-1, c, m) / self.temperature  # [N, C, M]
        pos = logits.gather(1, y.view(-1, 1, 1).expand(-1, 1, m)).squeeze(1)  # [N, M]: own-class prototypes
        own = y[:, None] == torch.arange(c, device=y.device)  # [N, C]; not one_hot, which syncs to check y
        negatives = logits.masked_fill(own[:, :, None], float("-inf")).flatten(1)
        log_ratio = pos - torch.logsumexp(negatives, dim=1, keepdim=True)  # [N, M]
        weights = torch.softmax(pos.detach(), dim=1)
        return -(weights * log_ratio).sum(1).mean()


class PSCLoss(MPSCLoss):
    """Prototypical supervised contrastive loss (Eq. 4): one prototype per class.

    Parameter ``prototypes`` ``[C, D]``. The positive prototype is not in the denominator,
    so the loss can go negative (Sec. 4.4's gradient argument depends on it).
    """

    def __init__(self, num_classes: int, feat_dim: int, temperature: float = 0.1):
        super().__init__(num_classes, feat_dim, 1, temperature)
        self.prototypes = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z, y = _flatten_views(features, labels)
        logits = _at_least_fp32(z @ F.normalize(self.prototypes, dim=-1).T) / self.temperature  # [N, C]
        own = y[:, None] == torch.arange(logits.shape[1], device=y.device)
        pos = logits.gather(1, y[:, None]).squeeze(1)
        neg_lse = torch.logsumexp(logits.masked_fill(own, float("-inf")), dim=1)
        return (neg_lse - pos).mean()


class FeatureCELoss(nn.Module):
    """Cross-entropy in the feature branch (the paper's CE-CE comparison).

    A linear layer ``weight [C, D]`` on the normalised embedding scaled by ``1/temperature``
    (decision: the paper gives no details), ``forward(features [B, V, D] or [N, D], labels)``.
    """

    def __init__(self, num_classes: int, feat_dim: int, temperature: float = 0.1):
        super().__init__()
        self.temperature = temperature
        self.classifier = nn.Linear(feat_dim, num_classes)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z, y = _flatten_views(features, labels)
        return F.cross_entropy(_at_least_fp32(self.classifier(z)) / self.temperature, y)


def build_contrastive_loss(name: str, num_classes: int, feat_dim: int, temperature: float,
                           prototypes_per_class: int = 1) -> nn.Module:
    """The feature-branch loss by name: ``sc``, ``psc``, ``mpsc`` or ``ce`` (CE-CE)."""
    if name == "sc":
        return SupConLoss(temperature, num_classes)
    if name == "psc":
        return PSCLoss(num_classes, feat_dim, temperature)
    if name == "mpsc":
        return MPSCLoss(num_classes, feat_dim, prototypes_per_class, temperature)
    if name == "ce":
        return FeatureCELoss(num_classes, feat_dim, temperature)
    raise ValueError(f"loss.contrastive: unknown value {name!r}; allowed: {CONTRASTIVE_LOSSES}")


CONTRASTIVE_LOSSES = ("sc", "psc", "mpsc", "ce")


class ClassifierLoss(nn.Module):
    """Base of the classifier-branch losses: ``forward(logits [B, C], labels [B], epoch)``.

    ``epoch`` (0-based) lets schedule-aware losses (deferred re-weighting) switch weights.
    """

    def __init__(self, class_counts: Sequence[int], epochs: int):
        super().__init__()
        self.register_buffer("class_counts", torch.as_tensor(list(class_counts), dtype=torch.float))
        self.epochs = epochs


class CrossEntropy(ClassifierLoss):
    def forward(self, logits: torch.Tensor, labels: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        return F.cross_entropy(_at_least_fp32(logits), labels)


# The classifier-branch registry: baselines slot in here (name -> class taking
# ``class_counts``, ``epochs`` and their own keyword parameters).
CLASSIFIER_LOSSES: dict[str, Callable[..., ClassifierLoss]] = {"ce": CrossEntropy}


def build_classifier_loss(name: str, class_counts: Sequence[int], epochs: int,
                          **params) -> ClassifierLoss:
    if name not in CLASSIFIER_LOSSES:
        raise ValueError(f"loss.classifier: unknown value {name!r}; allowed: {sorted(CLASSIFIER_LOSSES)}")
    return CLASSIFIER_LOSSES[name](class_counts=class_counts, epochs=epochs, **params)
