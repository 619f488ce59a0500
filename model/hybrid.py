"""The hybrid network (Fig. 2) and Eq. 1 as one module.

``HybridNet``: backbone -> projection head -> L2-normalised embedding ``[B, proj_dim]``;
backbone -> linear classifier ``[B, C]``. At test time only the classifier predicts.
``HybridObjective`` holds the net and both branch losses (the prototypes are parameters,
so one DDP wrapper syncs everything) and computes Eq. 1 from one backbone forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybridlt.model.backbones import create_backbone
from hybridlt.registry import Registry

CLASSIFIERS = Registry("model.classifier")  # the classifier head: (in_features, num_classes) -> module


CLASSIFIERS.register("linear")(nn.Linear)


@CLASSIFIERS.register("cosine")
class CosineLinear(nn.Module):
    """Cosine classifier: ``normalize(x) @ normalize(W).T`` -> ``[B, C]`` in [-1, 1] (LDAM's NormedLinear)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features).uniform_(-1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).T


class HybridNet(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int, proj_dim: int = 128,
                 proj_hidden: int | None = None, classifier: str = "linear"):
        super().__init__()
        d = backbone.feature_dim
        hidden = proj_hidden or d
        self.backbone = backbone
        self.head = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, proj_dim))
        self.classifier = CLASSIFIERS[classifier](d, num_classes)
        self.num_classes = num_classes
        self.proj_dim = proj_dim

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Backbone features ``[N, d]`` -> L2-normalised embedding ``[N, proj_dim]``."""
        h = self.head(features)
        return F.normalize(h.to(torch.promote_types(h.dtype, torch.float32)), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` -> class logits ``[B, num_classes]`` (the test-time path)."""
        return self.classifier(self.backbone(x))


def create_hybrid_net(backbone: str, num_classes: int, in_channels: int = 3, proj_dim: int = 128,
                      proj_hidden: int | None = None, classifier: str = "linear") -> HybridNet:
    return HybridNet(create_backbone(backbone, in_channels=in_channels), num_classes, proj_dim, proj_hidden,
                     classifier)


class HybridObjective(nn.Module):
    """Eq. 1: ``alpha * L_con(B_SC) + (1 - alpha) * L_cls(B_CE)``.

    ``forward(con_images [B, V, C, H, W], con_labels [B], ce_images [B', C, H, W],
    ce_labels [B'], alpha, epoch, frozen)`` -> ``(loss, con_loss, ce_loss)``, all scalars.
    One backbone forward runs over both views and the classifier batch together. With
    ``frozen`` (two-stage, second stage) only the classifier learns, on detached features
    of the classifier batch, and the contrastive branch is skipped.
    """

    def __init__(self, net: HybridNet, contrastive: nn.Module, classifier_loss: nn.Module):
        super().__init__()
        self.net = net
        self.contrastive = contrastive
        self.classifier_loss = classifier_loss

    def forward(self, con_images: torch.Tensor, con_labels: torch.Tensor, ce_images: torch.Tensor,
                ce_labels: torch.Tensor, alpha: float, epoch: int = 0, frozen: bool = False):
        if frozen:
            with torch.no_grad():
                feats = self.net.backbone(ce_images)
            ce_loss = self.classifier_loss(self.net.classifier(feats), ce_labels, epoch)
            return (1.0 - alpha) * ce_loss, ce_loss.detach() * 0.0, ce_loss
        b, v = con_images.shape[:2]
        batch = torch.cat([con_images.flatten(0, 1), ce_images])
        feats = self.net.backbone(batch)
        z = self.net.embed(feats[: b * v]).reshape(b, v, -1)
        con_loss = self.contrastive(z, con_labels)
        ce_loss = self.classifier_loss(self.net.classifier(feats[b * v:]), ce_labels, epoch)
        return alpha * con_loss + (1.0 - alpha) * ce_loss, con_loss, ce_loss
