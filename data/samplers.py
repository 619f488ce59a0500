"""Samplers over a labelled training set, each deterministic per (seed, epoch) and sharded per rank.

Every sampler draws one epoch of ``steps_per_epoch * batch_size`` indices (the same on every
rank); rank r of W takes the r-th contiguous slice of ``batch_size / W`` from each global batch,
so all ranks run the same number of steps and groups of positives stay together.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hybridlt.registry import Registry

SAMPLERS = Registry("sampler.contrastive/classifier")


class EpochSampler(torch.utils.data.Sampler):
    """Base: subclasses implement ``draw(rng, n) -> int64 [n]`` global indices."""

    def __init__(self, labels, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 num_samples: int | None = None, salt: int = 0):
        self.labels = np.asarray(labels, dtype=np.int64)
        if batch_size % world_size:
            raise ValueError(f"train.batch_size: {batch_size} is not divisible by {world_size} workers")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank: {rank} given; must be in [0, {world_size})")
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.num_samples = num_samples or len(self.labels)
        self.steps_per_epoch = max(1, math.ceil(self.num_samples / batch_size))
        self.salt = salt
        self.epoch = 0
        self.num_classes = int(self.labels.max()) + 1 if len(self.labels) else 0
        self.by_class = [np.flatnonzero(self.labels == c) for c in range(self.num_classes)]

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_indices(self, epoch: int) -> np.ndarray:
        """All ranks' indices for ``epoch``: ``int64 [steps_per_epoch, batch_size]``."""
        rng = np.random.default_rng([self.seed, self.salt, epoch])
        return self.draw(rng, self.steps_per_epoch * self.batch_size).reshape(self.steps_per_epoch, -1)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """This rank's indices: ``int64 [steps_per_epoch, batch_size / world_size]``."""
        per_rank = self.batch_size // self.world_size
        return self.global_indices(epoch)[:, self.rank * per_rank:(self.rank + 1) * per_rank]

    def __iter__(self):
        return iter(self.epoch_indices(self.epoch).reshape(-1).tolist())

    def __len__(self) -> int:
        return self.steps_per_epoch * (self.batch_size // self.world_size)


@SAMPLERS.register("random")
class RandomSampler(EpochSampler):
    """Instance-random: concatenated permutations of the whole set (each sample once per pass)."""

    def draw(self, rng, n):
        passes = math.ceil(n / len(self.labels))
        return np.concatenate([rng.permutation(len(self.labels)) for _ in range(passes)])[:n]


class ClassAwareSampler(EpochSampler):
    """A class drawn with probability proportional to ``count ** power``, then a sample of it.

    ``power`` 0 = class-balanced, 0.5 = square-root, 1 = instance-balanced with replacement.
    """

    power = 0.0

    def __init__(self, labels, batch_size: int, power: float | None = None, **kwargs):
        super().__init__(labels, batch_size, **kwargs)
        power = self.power if power is None else power
        counts = np.array([len(ix) for ix in self.by_class], dtype=np.float64)
        weights = np.where(counts > 0, counts**power, 0.0)
        self.class_probs = weights / weights.sum()

    def draw(self, rng, n):
        classes = rng.choice(len(self.class_probs), size=n, p=self.class_probs)
        out = np.empty(n, dtype=np.int64)
        for c in np.unique(classes):
            where = np.flatnonzero(classes == c)
            out[where] = self.by_class[c][rng.integers(0, len(self.by_class[c]), size=len(where))]
        return out


@SAMPLERS.register("class_balanced")
class ClassBalancedSampler(ClassAwareSampler):
    """Every class equally likely (``count ** 0``)."""

    power = 0.0


@SAMPLERS.register("sqrt")
class SquareRootSampler(ClassAwareSampler):
    """Classes in proportion to the square root of their counts."""

    power = 0.5


@SAMPLERS.register("positives")
class PositivesSampler(EpochSampler):
    """Groups of an anchor and ``positives`` other samples of its class, where the class has them.

    Anchors come from a random pass over the set; a class with fewer than ``positives + 1``
    samples gives all it has. Groups are laid end to end, so each sits in one batch unless it
    straddles a batch boundary.
    """

    def __init__(self, labels, batch_size: int, positives: int = 2, **kwargs):
        super().__init__(labels, batch_size, **kwargs)
        if positives < 1:
            raise ValueError(f"sampler.positives: {positives} given; must be >= 1")
        self.positives = positives

    def draw(self, rng, n):
        out: list[np.ndarray] = []
        total = 0
        while total < n:
            for anchor in rng.permutation(len(self.labels)):
                pool = self.by_class[self.labels[anchor]]
                others = pool[pool != anchor]
                k = min(self.positives, len(others))
                group = np.concatenate([[anchor], rng.choice(others, size=k, replace=False)])
                out.append(group)
                total += len(group)
                if total >= n:
                    break
        return np.concatenate(out)[:n].astype(np.int64)


def create_sampler(kind: str, labels, batch_size: int, **fields) -> EpochSampler:
    """A sampler by name (``SAMPLERS``); ``fields`` it does not take (``positives``) are left out."""
    return SAMPLERS.build(kind, labels=labels, batch_size=batch_size, **fields)
