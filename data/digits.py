"""The embedded default: scikit-learn's bundled 8x8 digits, made long-tailed (no download)."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from hybridlt.data.dataset import DATASETS
from hybridlt.data.long_tail import long_tail_counts, subsample_per_class
from hybridlt.data.memory import InMemoryData


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Digits' ``images`` (``float [1797, 8, 8]``, 0..16) and ``target`` (``int [1797]``).

    Read from the CSV that scikit-learn bundles (``sklearn/datasets/data/digits.csv.gz``: 64 pixel
    columns, then the label), found without importing scikit-learn: its import takes 1.4 s on a
    2-core machine, paid by every trial process of a quickstart sweep and by the driver's data
    check. Where the file is not there (another layout), scikit-learn's own loader reads it.
    """
    spec = importlib.util.find_spec("sklearn")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    bundled = [Path(r) / "datasets" / "data" / "digits.csv.gz" for r in roots]
    if bundled and bundled[0].is_file():
        with gzip.open(bundled[0], "rt") as f:
            table = np.loadtxt(f, delimiter=",")
        if table.ndim == 2 and table.shape[1] == 65:
            return table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target.astype(np.int64)


@DATASETS.register("digits_lt")
def load_digits_lt(imbalance_ratio: float = 20.0, max_count: int | None = 120, test_per_class: int | None = 50,
                   profile: str = "exp", seed: int = 0) -> InMemoryData:
    """A balanced test set (``test_per_class`` per class) and a long-tailed train set.

    Images are ``uint8 [N, 1, 8, 8]`` scaled from digits' 0..16 to 0..255. The split and the
    subsampling are seeded by ``seed``; class 0 keeps ``max_count`` images.
    """
    max_count, test_per_class = max_count or 120, test_per_class or 50
    pixels, labels = digits_arrays()
    images = np.rint(pixels * (255.0 / 16.0)).astype(np.uint8)[:, None]
    rng = np.random.default_rng(seed)
    test_idx, pool = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        if len(idx) < test_per_class + 1:
            raise ValueError(f"data.test_per_class: {test_per_class} leaves no training image for digit {c}")
        test_idx.append(idx[:test_per_class])
        pool.append(idx[test_per_class:])
    pool_idx = np.concatenate(pool)
    available = min(len(p) for p in pool)
    if max_count > available:
        raise ValueError(f"data.max_count: {max_count} given; digits has at most {available} "
                         f"training images per class after {test_per_class} test images per class")
    counts = long_tail_counts(10, max_count, imbalance_ratio, profile)
    train_idx = pool_idx[subsample_per_class(labels[pool_idx], counts, seed + 1)]
    test_idx = np.sort(np.concatenate(test_idx))
    return InMemoryData(
        train_images=torch.from_numpy(images[train_idx]),
        train_labels=torch.from_numpy(labels[train_idx]),
        test_images=torch.from_numpy(images[test_idx]),
        test_labels=torch.from_numpy(labels[test_idx]),
        class_names=[str(c) for c in range(10)],
    )
