"""Backbones behind one factory: CIFAR ResNets (option-A shortcuts) and torchvision's ResNet-50.

Every backbone maps images ``[B, C, H, W]`` to features ``[B, feature_dim]`` and exposes
``feature_dim``. ``create_backbone(name, ...)`` looks the name up in ``BACKBONES``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybridlt.registry import Registry

BACKBONES = Registry("model.backbone")
register = BACKBONES.register


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut (He et al. 2016, CIFAR): subsample by 2, zero-pad the new channels."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.front = extra_channels // 2
        self.back = extra_channels - self.front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.front, self.back))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        needs_shortcut = stride != 1 or in_planes != planes
        self.shortcut = ZeroPadShortcut(planes - in_planes) if needs_shortcut else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: 3 stages x n basic blocks, 16/32/64 channels.

    forward: ``[B, in_channels, H, W]`` -> ``[B, 64]`` (global average pool), or logits
    ``[B, num_classes]`` when ``num_classes`` is given.
    """

    def __init__(self, blocks_per_stage: int, num_classes: int | None = None, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for stage, planes in enumerate((16, 32, 64)):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.feature_dim = 64
        self.fc = nn.Linear(64, num_classes) if num_classes else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x) if self.fc is not None else x


@register("resnet8")
def resnet8(num_classes: int | None = None, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(1, num_classes, in_channels)


@register("resnet20")
def resnet20(num_classes: int | None = None, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(3, num_classes, in_channels)


@register("resnet32")
def resnet32(num_classes: int | None = None, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(5, num_classes, in_channels)


class TorchvisionResNet(nn.Module):
    """torchvision's ResNet-50 (random init) with its classifier removed: ``[B, 3, H, W] -> [B, 2048]``."""

    def __init__(self, num_classes: int | None = None, in_channels: int = 3):
        super().__init__()
        from torchvision.models import resnet50 as tv_resnet50

        net = tv_resnet50(weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.feature_dim = net.fc.in_features
        net.fc = nn.Linear(self.feature_dim, num_classes) if num_classes else nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register("resnet50")
def resnet50(num_classes: int | None = None, in_channels: int = 3) -> TorchvisionResNet:
    return TorchvisionResNet(num_classes, in_channels)


def create_backbone(name: str, num_classes: int | None = None, in_channels: int = 3) -> nn.Module:
    return BACKBONES.build(name, num_classes=num_classes, in_channels=in_channels)
