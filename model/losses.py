"""Losses of the hybrid network (PAPER.md, Eq. 2-5) and the classifier-branch registry.

Contrastive losses take ``features`` that are already L2-normalised, either ``[B, V, D]``
(B samples, V augmented views, D dims) or ``[N, D]`` where the prototype losses allow it,
and ``labels`` ``[B]`` (int64). All return a scalar tensor: the mean over anchors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hybridlt.registry import Registry

# The feature-branch losses (``loss.contrastive``) and the classifier-branch losses (``loss.classifier``).
# Builders take keyword arguments named like the ``loss.*`` config fields (plus ``num_classes``,
# ``feat_dim``, ``class_counts``, ``epochs``); each takes the ones it needs.
CONTRASTIVE_LOSSES = Registry("loss.contrastive")
CLASSIFIER_LOSSES = Registry("loss.classifier")


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


@CONTRASTIVE_LOSSES.register("sc")
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


@CONTRASTIVE_LOSSES.register("mpsc")
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


@CONTRASTIVE_LOSSES.register("psc")
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


@CONTRASTIVE_LOSSES.register("ce")
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


def build_contrastive_loss(name: str, num_classes: int, feat_dim: int, **fields) -> nn.Module:
    """The feature-branch loss by name (``CONTRASTIVE_LOSSES``); ``fields`` are ``loss.*`` config fields."""
    return CONTRASTIVE_LOSSES.build(name, num_classes=num_classes, feat_dim=feat_dim, **fields)


class ClassifierLoss(nn.Module):
    """Base of the classifier-branch losses: ``forward(logits [B, C], labels [B], epoch)``.

    ``epoch`` (0-based) lets schedule-aware losses (deferred re-weighting) switch weights.
    """

    def __init__(self, class_counts: Sequence[int], epochs: int):
        super().__init__()
        self.register_buffer("class_counts", torch.as_tensor(list(class_counts), dtype=torch.float))
        self.epochs = epochs


@CLASSIFIER_LOSSES.register("ce")
class CrossEntropy(ClassifierLoss):
    def forward(self, logits: torch.Tensor, labels: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        return F.cross_entropy(_at_least_fp32(logits), labels)


def effective_number_weights(class_counts: Sequence[int] | torch.Tensor, beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights (Cui et al. 2019): ``(1 - beta) / (1 - beta^n_c)``, scaled to sum to C."""
    n = torch.as_tensor(class_counts, dtype=torch.float64)
    w = (1 - beta) / (1 - beta**n)
    return (w / w.sum() * len(n)).float()


def ldam_margins(class_counts: Sequence[int] | torch.Tensor, max_margin: float = 0.5) -> torch.Tensor:
    """LDAM margins (Cao et al. 2019): proportional to ``n_c^(-1/4)``, the smallest class's = ``max_margin``."""
    m = torch.as_tensor(class_counts, dtype=torch.float64) ** -0.25
    return (m * (max_margin / m.max())).float()


def _weighted_focal(logits: torch.Tensor, labels: torch.Tensor, gamma: float,
                    weight: torch.Tensor | None) -> torch.Tensor:
    """``sum_i w_{y_i} (1 - p_i)^gamma (-log p_i) / sum_i w_{y_i}`` (softmax focal; gamma 0 = weighted CE)."""
    log_p = F.log_softmax(_at_least_fp32(logits), dim=1).gather(1, labels[:, None]).squeeze(1)
    loss = -((1 - log_p.exp()) ** gamma) * log_p if gamma else -log_p
    if weight is None:
        return loss.mean()
    w = weight.to(loss.dtype)[labels]
    return (w * loss).sum() / w.sum()


@CLASSIFIER_LOSSES.register("focal")
class FocalLoss(ClassifierLoss):
    """Softmax focal loss (Lin et al. 2017), ``gamma`` = ``loss.focal_gamma``."""

    def __init__(self, class_counts, epochs, focal_gamma: float = 1.0):
        super().__init__(class_counts, epochs)
        self.gamma = focal_gamma

    def forward(self, logits, labels, epoch: int = 0):
        return _weighted_focal(logits, labels, self.gamma, None)


@CLASSIFIER_LOSSES.register("cb_ce")
class ClassBalancedLoss(ClassifierLoss):
    """CE weighted by the effective number of samples (``cb_beta``): ``sum_i w_{y_i} CE_i / sum_i w_{y_i}``.

    Takes no ``focal_gamma``: the config's focal default must not turn class-balanced CE into a focal loss.
    """

    gamma = 0.0

    def __init__(self, class_counts, epochs, cb_beta: float = 0.9999):
        super().__init__(class_counts, epochs)
        self.register_buffer("weight", effective_number_weights(class_counts, cb_beta))

    def forward(self, logits, labels, epoch: int = 0):
        return _weighted_focal(logits, labels, self.gamma, self.weight)


@CLASSIFIER_LOSSES.register("cb_focal")
class ClassBalancedFocal(ClassBalancedLoss):
    """The focal loss (``focal_gamma``) with class-balanced weights, normalised like ``cb_ce``."""

    def __init__(self, class_counts, epochs, cb_beta: float = 0.9999, focal_gamma: float = 1.0):
        super().__init__(class_counts, epochs, cb_beta)
        self.gamma = focal_gamma


@CLASSIFIER_LOSSES.register("ldam")
class LDAMLoss(ClassifierLoss):
    """LDAM (Cao et al. 2019) on cosine logits: ``CE(s * (cos - m_y 1_y), y)``, margins from
    ``ldam_margins``, never re-weighted (``ldam_drw`` re-weights). Expects a cosine classifier
    (``model.classifier: cosine``, its default).
    """

    default_head = "cosine"

    def __init__(self, class_counts, epochs, ldam_max_margin: float = 0.5, ldam_scale: float = 30.0):
        super().__init__(class_counts, epochs)
        self.scale = ldam_scale
        self.drw_epoch = epochs  # never: plain LDAM takes no drw_start
        self.register_buffer("margins", ldam_margins(class_counts, ldam_max_margin))
        self.register_buffer("weight", torch.ones(len(self.class_counts)))

    def forward(self, logits, labels, epoch: int = 0):
        cos = _at_least_fp32(logits)
        target = (labels[:, None] == torch.arange(cos.shape[1], device=labels.device)).to(cos.dtype)
        shifted = cos - target * self.margins.to(cos.dtype)[labels, None]
        weight = self.weight.to(cos.dtype) if epoch >= self.drw_epoch else None
        return F.cross_entropy(self.scale * shifted, labels, weight=weight)


@CLASSIFIER_LOSSES.register("ldam_drw")
class LDAMDRWLoss(LDAMLoss):
    """LDAM with deferred re-weighting: class-balanced weights (``cb_beta``) from epoch
    ``int(drw_start * epochs)`` on (0-based)."""

    def __init__(self, class_counts, epochs, ldam_max_margin: float = 0.5, ldam_scale: float = 30.0,
                 drw_start: float = 0.8, cb_beta: float = 0.9999):
        super().__init__(class_counts, epochs, ldam_max_margin, ldam_scale)
        self.drw_epoch = int(drw_start * epochs)
        self.weight = effective_number_weights(class_counts, cb_beta)


@CLASSIFIER_LOSSES.register("logit_adjust")
class LogitAdjustedLoss(ClassifierLoss):
    """Logit adjustment (Menon et al. 2021): ``CE(logits + tau * log prior, y)`` in training only;
    the test-time logits are left as they are. tau = 1 is the balanced softmax (Ren et al. 2020)."""

    def __init__(self, class_counts, epochs, la_tau: float = 1.0):
        super().__init__(class_counts, epochs)
        counts = self.class_counts.clamp(min=1)
        self.register_buffer("adjustment", la_tau * torch.log(counts / counts.sum()))

    def forward(self, logits, labels, epoch: int = 0):
        logits = _at_least_fp32(logits)
        return F.cross_entropy(logits + self.adjustment.to(logits.dtype), labels)


@CLASSIFIER_LOSSES.register("balanced_softmax")
class BalancedSoftmax(LogitAdjustedLoss):
    def __init__(self, class_counts, epochs):
        super().__init__(class_counts, epochs, la_tau=1.0)


def build_classifier_loss(name: str, class_counts: Sequence[int], epochs: int, **fields) -> ClassifierLoss:
    """The classifier-branch loss by name (``CLASSIFIER_LOSSES``); ``fields`` it does not take are ignored."""
    return CLASSIFIER_LOSSES.build(name, class_counts=class_counts, epochs=epochs, **fields)


def default_head(classifier_loss: str) -> str:
    """The classifier head a loss expects when ``model.classifier`` is not set (LDAM: cosine)."""
    return getattr(CLASSIFIER_LOSSES[classifier_loss], "default_head", "linear")
