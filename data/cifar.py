"""CIFAR-10-LT and CIFAR-100-LT on torchvision's ``CIFAR10`` / ``CIFAR100`` files.

The files are the python pickles torchvision downloads (``cifar-10-batches-py/`` or
``cifar-100-python/`` under ``root``); they are read here directly, so that the training set can
be subsampled per class without decoding through PIL. The test set is left untouched.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from hybridlt.data.dataset import DATASETS
from hybridlt.data.long_tail import long_tail_counts, subsample_per_class
from hybridlt.data.memory import InMemoryData
from hybridlt.errors import InputError

# (torchvision class, folder, train files, test files, meta file, label key, names key, classes)
_LAYOUT = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                ["test_batch"], "batches.meta", "labels", "label_names", 10),
    "cifar100": ("CIFAR100", "cifar-100-python", ["train"], ["test"], "meta", "fine_labels",
                 "fine_label_names", 100),
}


class DatasetFilesError(InputError, FileNotFoundError):
    """Dataset files missing or unreadable; the message says where and how to get them."""


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, OSError) as exc:
        raise DatasetFilesError(f"{path}: unreadable CIFAR file ({exc}); delete it and download again") from exc


def _read_split(folder: Path, files: list[str], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        entry = _read_pickle(folder / name)
        if "data" not in entry or label_key not in entry:
            raise DatasetFilesError(f"{folder / name}: not a CIFAR batch (keys 'data' and {label_key!r} expected)")
        images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(entry[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def load_cifar_lt(name: str, root: str | Path, imbalance_ratio: float = 100.0, profile: str = "exp",
                  max_count: int | None = None, seed: int = 0, download: bool = False) -> InMemoryData:
    """CIFAR-10-LT / CIFAR-100-LT (``name`` = ``cifar10`` or ``cifar100``) as uint8 tensors."""
    tv_name, sub, train_files, test_files, meta_file, label_key, names_key, num_classes = _LAYOUT[name]
    root = Path(root).expanduser().resolve()
    folder = root / sub
    needed = [*train_files, *test_files, meta_file]
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing and download:
        import torchvision.datasets as tvd

        existed = root.exists()
        try:
            getattr(tvd, tv_name)(str(root), train=True, download=True)
        except OSError as exc:  # offline: urllib's URLError is an OSError
            if not existed and root.is_dir() and not any(root.iterdir()):
                root.rmdir()
            raise DatasetFilesError(f"data.download: could not download {tv_name} into {root} "
                                    f"({getattr(exc, 'reason', exc)}); offline, extract the python version of "
                                    f"{tv_name} into {folder} and set data.download: false") from None
        missing = [f for f in needed if not (folder / f).is_file()]
    if missing:
        raise DatasetFilesError(
            f"data.root: {name} files not found in {folder} (missing: {', '.join(missing)}); "
            f"set data.download: true to fetch them with torchvision.datasets.{tv_name}, "
            f"or extract the python version of {tv_name} there")
    train_x, train_y = _read_split(folder, train_files, label_key)
    test_x, test_y = _read_split(folder, test_files, label_key)
    class_names = list(_read_pickle(folder / meta_file)[names_key])
    available = int(np.bincount(train_y, minlength=num_classes).min())
    if max_count and max_count > available:
        raise ValueError(f"data.max_count: {max_count} given; {name} has at most {available} "
                         f"training images per class in {folder}")
    per_class = max_count or available
    keep = subsample_per_class(train_y, long_tail_counts(num_classes, per_class, imbalance_ratio, profile), seed)
    return InMemoryData(torch.from_numpy(train_x[keep]), torch.from_numpy(train_y[keep]),
                        torch.from_numpy(test_x), torch.from_numpy(test_y), class_names)


@DATASETS.register("cifar10_lt")
def load_cifar10_lt(root: str, imbalance_ratio: float = 100.0, profile: str = "exp", max_count: int | None = None,
                    seed: int = 0, download: bool = False) -> InMemoryData:
    """CIFAR-10-LT from torchvision's ``cifar-10-batches-py`` under ``data.root``."""
    return load_cifar_lt("cifar10", root, imbalance_ratio, profile, max_count, seed, download)


@DATASETS.register("cifar100_lt")
def load_cifar100_lt(root: str, imbalance_ratio: float = 100.0, profile: str = "exp", max_count: int | None = None,
                     seed: int = 0, download: bool = False) -> InMemoryData:
    """CIFAR-100-LT from torchvision's ``cifar-100-python`` under ``data.root``."""
    return load_cifar_lt("cifar100", root, imbalance_ratio, profile, max_count, seed, download)
