"""In-memory datasets: the whole train and test sets as uint8 tensors ``[N, C, H, W]``."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class InMemoryData:
    train_images: torch.Tensor  # uint8 [N, C, H, W]
    train_labels: torch.Tensor  # int64 [N]
    test_images: torch.Tensor  # uint8 [M, C, H, W]
    test_labels: torch.Tensor  # int64 [M]
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return self.train_images.shape[1]

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training images on the 0..1 scale."""
        x = self.train_images.float().div_(255).transpose(0, 1).flatten(1)
        return x.mean(1).tolist(), x.std(1).clamp(min=1e-3).tolist()

    def to(self, device: torch.device | str) -> InMemoryData:
        return InMemoryData(self.train_images.to(device), self.train_labels.to(device),
                            self.test_images.to(device), self.test_labels.to(device), self.class_names)
