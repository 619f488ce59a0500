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

_multiarray = getattr(np, "_core", None) and np._core.multiarray or np.core.multiarray

# (torchvision class, folder, train files, test files, meta file, label key, names key, classes)
_LAYOUT = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                ["test_batch"], "batches.meta", "labels", "label_names", 10),
    "cifar100": ("CIFAR100", "cifar-100-python", ["train"], ["test"], "meta", "fine_labels",
                 "fine_label_names", 100),
}


class DatasetFilesError(InputError, FileNotFoundError):
    """Dataset files missing or unreadable; the message says where and how to get them."""


# What torchvision's CIFAR pickles reference: numpy's array reconstruction and nothing else.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}
MAX_FILE_BYTES = 1 << 30  # the largest real file (CIFAR-100 train) is 150 MiB


class _CifarUnpickler(pickle.Unpickler):
    """Admits dicts, lists, str, bytes, numbers and numpy arrays; any other global (a function, a
    class: what a crafted pickle calls to run code) is refused before it is looked up."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refers to {module}.{name}, which a CIFAR file never holds "
                                         f"(allowed: numpy arrays, dicts, lists, strings, numbers)")
        return getattr(np if name in ("ndarray", "dtype") else _multiarray, name)


def _read_pickle(path: Path) -> dict:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise DatasetFilesError(f"{path}: {size} bytes, more than a CIFAR file holds "
                                    f"(at most {MAX_FILE_BYTES} bytes allowed)")
        with open(path, "rb") as f:
            entry = _CifarUnpickler(f, encoding="latin1").load()
    except DatasetFilesError:
        raise
    except MemoryError:
        raise DatasetFilesError(f"{path}: unreadable CIFAR file (it asks for more memory than there is); "
                                f"delete it and download again") from None
    except Exception as exc:  # a broken pickle raises almost anything (KeyError, TypeError, IndexError ...)
        raise DatasetFilesError(f"{path}: unreadable CIFAR file ({type(exc).__name__}: {exc}); "
                                f"delete it and download again") from None
    if not isinstance(entry, dict):
        raise DatasetFilesError(f"{path}: not a CIFAR file (a dict expected, got {type(entry).__name__})")
    return entry


def _as_images(value, path: Path) -> np.ndarray:
    """The ``data`` entry: uint8 rows of 3072 values (1024 red, 1024 green, 1024 blue)."""
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8 or value.ndim != 2 or value.shape[1] != 3072:
            raise DatasetFilesError(f"{path}: 'data' is a {value.dtype} array of shape {value.shape}; "
                                    f"allowed: uint8 of shape (N, 3072)")
        return value
    if not isinstance(value, list) or not all(isinstance(r, list | bytes) and len(r) == 3072 for r in value):
        raise DatasetFilesError(f"{path}: 'data' is not N rows of 3072 pixel values "
                                f"(got {type(value).__name__}); allowed: a uint8 array of shape (N, 3072)")
    try:
        rows = np.asarray(value, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DatasetFilesError(f"{path}: 'data' holds values that are not pixel values ({exc})") from None
    if rows.size and (rows.min() < 0 or rows.max() > 255):
        raise DatasetFilesError(f"{path}: 'data' holds {int(rows.max()) if rows.max() > 255 else int(rows.min())}; "
                                f"allowed: pixel values 0 .. 255")
    return rows.astype(np.uint8).reshape(len(value), 3072)


def _as_labels(value, path: Path, key: str, num_classes: int, n: int) -> np.ndarray:
    if not isinstance(value, list | np.ndarray) or not all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value):
        raise DatasetFilesError(f"{path}: {key!r} is not a list of integer class ids (got {type(value).__name__})")
    labels = np.asarray(value, dtype=np.int64).reshape(-1)
    if len(labels) != n:
        raise DatasetFilesError(f"{path}: {len(labels)} labels for {n} images in 'data'; allowed: one per image")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise DatasetFilesError(f"{path}: {key!r} holds label {int(bad[0])}; allowed: 0 .. {num_classes - 1}")
    return labels


def _read_split(folder: Path, files: list[str], label_key: str,
                num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        path = folder / name
        entry = _read_pickle(path)
        if "data" not in entry or label_key not in entry:
            raise DatasetFilesError(f"{path}: not a CIFAR batch (keys 'data' and {label_key!r} expected)")
        rows = _as_images(entry["data"], path)
        labels.append(_as_labels(entry[label_key], path, label_key, num_classes, len(rows)))
        images.append(rows.reshape(-1, 3, 32, 32))
    return np.concatenate(images), np.concatenate(labels)


def _read_names(path: Path, key: str, num_classes: int) -> list[str]:
    names = _read_pickle(path).get(key)
    if not isinstance(names, list) or len(names) != num_classes or not all(isinstance(n, str | bytes) for n in names):
        raise DatasetFilesError(f"{path}: {key!r} is not a list of {num_classes} class names")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


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

        getattr(tvd, tv_name)(str(root), train=True, download=True)
        missing = [f for f in needed if not (folder / f).is_file()]
    if missing:
        raise DatasetFilesError(
            f"data.root: {name} files not found in {folder} (missing: {', '.join(missing)}); "
            f"set data.download: true to fetch them with torchvision.datasets.{tv_name}, "
            f"or extract the python version of {tv_name} there")
    train_x, train_y = _read_split(folder, train_files, label_key, num_classes)
    test_x, test_y = _read_split(folder, test_files, label_key, num_classes)
    if not len(test_y):
        raise DatasetFilesError(f"{folder / test_files[0]}: holds no test image; the validation set would be empty")
    class_names = _read_names(folder / meta_file, names_key, num_classes)
    available = int(np.bincount(train_y, minlength=num_classes).min())
    if available == 0:
        empty = int(np.argmin(np.bincount(train_y, minlength=num_classes)))
        raise DatasetFilesError(f"{folder}: class {empty} has no training image; allowed: every class 0 .. "
                                f"{num_classes - 1} present")
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
