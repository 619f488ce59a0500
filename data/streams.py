"""The two data streams of the hybrid network, one training step at a time.

Each step yields ``(con_images [b, 2, C, H, W], con_labels [b], ce_images [b, C, H, W],
ce_labels [b])`` on the training device: the contrastive batch B_SC in two views and the
classifier batch B_CE, drawn by two independent samplers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import torch

from hybridlt.data.augment import BatchAugment
from hybridlt.data.memory import InMemoryData
from hybridlt.data.samplers import EpochSampler

Step = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _generator(device: torch.device, *seed_parts: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence(list(seed_parts)).generate_state(1, dtype=np.uint64)[0] >> 1))
    return g


class InMemoryStreams:
    """Both streams from uint8 tensors already on ``device``: index, augment, no DataLoader."""

    def __init__(self, data: InMemoryData, con_sampler: EpochSampler, ce_sampler: EpochSampler,
                 augment: BatchAugment, seed: int = 0, device: torch.device | str = "cpu"):
        if con_sampler.steps_per_epoch != ce_sampler.steps_per_epoch:
            raise ValueError("the two samplers must have the same number of steps per epoch")
        self.device = torch.device(device)
        self.images = data.train_images.to(self.device)
        self.labels = data.train_labels.to(self.device)
        self.con_sampler, self.ce_sampler = con_sampler, ce_sampler
        self.augment, self.seed = augment, seed
        self.steps_per_epoch = con_sampler.steps_per_epoch
        self.data_wait_s = 0.0

    def epoch(self, epoch: int) -> Iterator[Step]:
        rank = self.con_sampler.rank
        gen = _generator(self.device, self.seed, epoch, rank)
        con_idx = torch.from_numpy(self.con_sampler.epoch_indices(epoch)).to(self.device)
        ce_idx = torch.from_numpy(self.ce_sampler.epoch_indices(epoch)).to(self.device)
        self.data_wait_s = 0.0
        for step in range(self.steps_per_epoch):
            ci, ei = con_idx[step], ce_idx[step]
            yield (self.augment.two_views(self.images[ci], gen), self.labels[ci],
                   self.augment(self.images[ei], gen), self.labels[ei])


class LoaderStreams:
    """Both streams from two DataLoaders (image lists): the con dataset yields 2 views per sample.

    ``data_wait_s`` is the time the last epoch's steps spent waiting for their batches.
    """

    def __init__(self, con_loader, ce_loader, device: torch.device | str = "cpu"):
        self.con_loader, self.ce_loader = con_loader, ce_loader
        self.device = torch.device(device)
        self.steps_per_epoch = min(len(con_loader), len(ce_loader))
        self.data_wait_s = 0.0

    def epoch(self, epoch: int) -> Iterator[Step]:
        for loader in (self.con_loader, self.ce_loader):
            loader.sampler.set_epoch(epoch)
        self.data_wait_s = 0.0
        con_it, ce_it = iter(self.con_loader), iter(self.ce_loader)
        for _ in range(self.steps_per_epoch):
            start = time.perf_counter()
            (cx, cy), (ex, ey) = next(con_it), next(ce_it)
            nb = self.device.type == "cuda"
            batch = (cx.to(self.device, non_blocking=nb), cy.to(self.device, non_blocking=nb),
                     ex.to(self.device, non_blocking=nb), ey.to(self.device, non_blocking=nb))
            self.data_wait_s += time.perf_counter() - start
            yield batch
