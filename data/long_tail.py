"""Long-tail profiles, per-class subsampling and many / medium / few groups."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hybridlt.registry import Registry

GROUPS = ("many", "medium", "few")
PROFILES = Registry("data.profile")  # fn(num_classes, max_count, imbalance_ratio) -> counts, class 0 the largest


@PROFILES.register("exp")
def exp_profile(num_classes: int, max_count: int, imbalance_ratio: float) -> list[int]:
    """``int(max_count * (1/ratio) ** (i / (C - 1)))`` (the LDAM-DRW convention)."""
    if num_classes == 1:
        return [int(max_count)]
    return [int(max_count * (1.0 / imbalance_ratio) ** (i / (num_classes - 1))) for i in range(num_classes)]


@PROFILES.register("step")
def step_profile(num_classes: int, max_count: int, imbalance_ratio: float) -> list[int]:
    """The first half of the classes at ``max_count``, the rest at ``int(max_count / ratio)``."""
    half = max(1, num_classes // 2)
    return [int(max_count)] * half + [int(max_count / imbalance_ratio)] * (num_classes - half)


def long_tail_counts(num_classes: int, max_count: int, imbalance_ratio: float,
                     profile: str = "exp") -> list[int]:
    """Per-class training counts by the profile named ``profile`` (``PROFILES``), class 0 the largest."""
    if num_classes < 1:
        raise ValueError(f"num_classes: {num_classes} given; must be >= 1")
    if imbalance_ratio < 1:
        raise ValueError(f"data.imbalance_ratio: {imbalance_ratio} given; must be >= 1")
    counts = PROFILES.build(profile, num_classes=num_classes, max_count=max_count, imbalance_ratio=imbalance_ratio)
    if min(counts) < 1:
        empty = counts.index(min(counts))
        raise ValueError(f"data.imbalance_ratio: {imbalance_ratio} with {max_count} images in the largest class "
                         f"leaves class {empty} with no training image; allowed: a ratio of at most {max_count} "
                         f"(or a larger data.max_count)")
    return counts


def subsample_per_class(labels: np.ndarray, counts: Sequence[int], seed: int) -> np.ndarray:
    """Indices keeping ``counts[c]`` samples of class c: a seeded shuffle per class, first n kept.

    Returned sorted, so the kept subset keeps the source order.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    kept = []
    for c, n in enumerate(counts):
        idx = np.flatnonzero(labels == c)
        if n > len(idx):
            raise ValueError(f"class {c}: {n} samples requested but only {len(idx)} available")
        kept.append(idx[rng.permutation(len(idx))[:n]])
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)


def class_counts(labels: np.ndarray, num_classes: int) -> list[int]:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).tolist()


def shot_groups(counts: Sequence[int], many_above: int = 100, few_below: int = 20) -> dict[str, list[int]]:
    """Class indices per group by training count: many > many_above, few < few_below, medium between."""
    groups: dict[str, list[int]] = {g: [] for g in GROUPS}
    for c, n in enumerate(counts):
        groups["many" if n > many_above else "few" if n < few_below else "medium"].append(c)
    return groups
