"""In-memory datasets: the whole train and test sets as uint8 tensors ``[N, C, H, W]``."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class InMemoryData:
    train_images: torch.Tensor  # uint8 [N, C, H, W]
    train_labels: torch.Tensor  # int64 [N]
    test_images: torch.Tensor  # uint8 [M, C, H, W]
    test_labels: torch.Tensor  # int64 [M]
    class_names: list[str]
    _stats: tuple[list[float], list[float]] | None = field(default=None, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return self.train_images.shape[1]

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training images on the 0..1 scale (computed once)."""
        if self._stats is None:
            x = self.train_images.float().div_(255).transpose(0, 1).flatten(1)
            self._stats = (x.mean(1).tolist(), x.std(1).clamp(min=1e-3).tolist())
        return self._stats

    def _augment(self, augment: dict):
        from hybridlt.data.augment import BatchAugment

        mean, std = self.channel_stats()
        return BatchAugment(mean, std, **{**augment, "jitter": tuple(augment.get("jitter", (0.4, 0.4, 0.4, 0.1)))})

    def train_streams(self, con_sampler, ce_sampler, *, seed: int, device, augment: dict, **_):
        """Both streams indexed from the uint8 tensors on ``device`` and augmented there in batches."""
        from hybridlt.data.streams import InMemoryStreams

        return InMemoryStreams(self, con_sampler, ce_sampler, self._augment(augment), seed, device)

    def eval_batches(self, *, rank: int, world_size: int, batch_size: int, device, augment: dict | None = None, **_):
        """This rank's share of the test set (every ``world_size``-th image), normalised like training."""
        normalize = self._augment(augment or {}).normalize
        x, y = self.test_images[rank::world_size].to(device), self.test_labels[rank::world_size].to(device)
        return lambda: ((normalize(x[i:i + batch_size]), y[i:i + batch_size]) for i in range(0, len(y), batch_size))

    def to(self, device: torch.device | str) -> InMemoryData:
        return InMemoryData(self.train_images.to(device), self.train_labels.to(device),
                            self.test_images.to(device), self.test_labels.to(device), self.class_names, self._stats)
