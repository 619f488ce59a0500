"""A folder per class: ``root/train/<class>/*`` and ``root/test/<class>/*`` (or ``root/val/``).

Class names are the sub-folders of ``train/``, sorted; class ``i`` is the i-th name. The long-tail
options work as for CIFAR-LT: classes are ranked by their image count in the folder (largest
first, ties in name order), rank ``r`` keeps ``min(available, long_tail_counts(...)[r])`` images,
picked by a seeded shuffle; ratio 1 without ``max_count`` keeps the folder as it is.

Small images (every side at most ``memory_max_size``) take the in-memory path: the whole folder is
decoded once into a uint8 cache file (keyed by the relative paths, sizes and mtimes of every
image, written atomically under a lock, so every trial and worker on one machine shares it) and
returned as ``InMemoryData`` for the batched augmentation. Larger images are returned as
``ImageListData`` and decoded by DataLoader workers.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hybridlt.data.dataset import DATASETS
from hybridlt.data.image_list import ImageListData, ImageListDataset, decode_rgb
from hybridlt.data.long_tail import long_tail_counts, subsample_per_class
from hybridlt.data.memory import InMemoryData
from hybridlt.errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CACHE_VERSION = 2  # 2: 16-bit images scaled to 8 bits (1 wrapped them)
# Counts decodes into the cache, so that a caller (or a test) can see the cache being reused.
STATS = {"decoded": 0, "cache_hits": 0, "cache_writes": 0}


class ImageFolderError(InputError):
    """A folder that is not in the ``train/<class>/`` layout; the message names the folder."""


@dataclass
class FolderListing:
    class_names: list[str]
    train: list[tuple[Path, int]]
    test: list[tuple[Path, int]]
    root: Path
    stats: dict[Path, tuple[int, int]]  # path -> (size, mtime_ns)


def default_cache_dir() -> Path:
    """``$HYBRIDLT_CACHE``, else ``$XDG_CACHE_HOME/hybridlt``, else ``~/.cache/hybridlt``: per user and
    machine, outside the data folder (which may be read-only or shared)."""
    if os.environ.get("HYBRIDLT_CACHE"):
        return Path(os.environ["HYBRIDLT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "hybridlt"


def _images_in(folder: Path, stats: dict[Path, tuple[int, int]]) -> list[Path]:
    """The folder's image files, sorted; their (size, mtime_ns) go into ``stats`` (one scandir pass)."""
    found = []
    with os.scandir(folder) as entries:
        for e in entries:
            if not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES:
                st = e.stat()
                path = folder / e.name
                stats[path] = (st.st_size, st.st_mtime_ns)
                found.append(path)
    return sorted(found)


def _class_dirs(split: Path) -> list[str]:
    return sorted(p.name for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_folder(root: str | Path) -> FolderListing:
    """The classes and the ``(path, label)`` pairs of ``root/train`` and ``root/test`` (or ``val``)."""
    root = Path(root).expanduser().resolve()
    train_dir = root / "train"
    test_dir = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        found = (sorted(p.name for p in root.iterdir()) if root.is_dir()
                 else "a file, not a folder" if root.exists() else "no such folder")
        raise ImageFolderError(f"data.root: {root} must hold train/ and test/ (or val/), one sub-folder per "
                               f"class (found: {found})")
    names = _class_dirs(train_dir)
    if not names:
        raise ImageFolderError(f"data.root: {train_dir} has no class sub-folders")
    unknown = sorted(set(_class_dirs(test_dir)) - set(names))
    if unknown:
        raise ImageFolderError(f"data.root: {test_dir / unknown[0]} is not a class of {train_dir} "
                               f"(classes: {', '.join(names)})")
    stats: dict[Path, tuple[int, int]] = {}
    train = [(p, c) for c, n in enumerate(names) for p in _images_in(train_dir / n, stats)]
    test = [(p, c) for c, n in enumerate(names) if (test_dir / n).is_dir() for p in _images_in(test_dir / n, stats)]
    empty = [n for c, n in enumerate(names) if not any(label == c for _, label in train)]
    if empty:
        raise ImageFolderError(f"data.root: {train_dir / empty[0]} holds no image "
                               f"(suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})")
    untested = [n for c, n in enumerate(names) if not any(label == c for _, label in test)]
    if test and untested:  # with no test image at all, load_dataset's error says so
        shown = ", ".join(untested[:5]) + (f" and {len(untested) - 5} more" if len(untested) > 5 else "")
        print(f"warning: data.root: {test_dir} has no image of {len(untested)} of {len(names)} classes "
              f"({shown}): they train as usual and get no accuracy (left out of the balanced and group means)",
              file=sys.stderr, flush=True)
    return FolderListing(names, train, test, root, stats)


def long_tail_keep(labels: np.ndarray, num_classes: int, imbalance_ratio: float, profile: str,
                   max_count: int | None, seed: int) -> np.ndarray:
    """Indices of the training images kept: classes ranked by count, the profile's counts per rank."""
    available = np.bincount(labels, minlength=num_classes)
    if imbalance_ratio == 1 and not max_count:
        return np.arange(len(labels))
    rank = sorted(range(num_classes), key=lambda c: (-available[c], c))
    # max_count caps the largest class: above what the folder holds, the profile starts from what it
    # holds (from 120 over classes of 30, ratio 10 kept 30 ... 12: an imbalance of 2.5, not 10)
    largest = min(max_count, int(available.max())) if max_count else int(available.max())
    targets = long_tail_counts(num_classes, largest, imbalance_ratio, profile)
    counts = [0] * num_classes
    for r, c in enumerate(rank):
        counts[c] = min(int(available[c]), targets[r])
    return subsample_per_class(labels, counts, seed)


def _cache_key(listing: FolderListing, memory_max_size: int) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION} max{memory_max_size}\n".encode())
    for split, pairs in (("train", listing.train), ("test", listing.test)):
        for path, label in pairs:
            size, mtime = listing.stats[path]
            h.update(f"{split} {path.relative_to(listing.root)} {label} {size} {mtime}\n".encode())
    return h.hexdigest()[:24]


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as img:  # reads the header only
            return img.size
    except Image.DecompressionBombError as exc:
        raise ImageFolderError(f"{path}: cannot be read ({exc}): larger than Pillow reads, whatever "
                               f"data.max_image_pixels allows") from None
    except (OSError, ValueError, SyntaxError) as exc:  # empty, truncated, not an image
        raise ImageFolderError(f"{path}: cannot decode image ({exc})") from None


def _decode(path: Path) -> torch.Tensor:
    STATS["decoded"] += 1
    return decode_rgb(path)


def _decode_all(pairs: list[tuple[Path, int]], side: int) -> torch.Tensor:
    out = torch.empty(len(pairs), 3, side, side, dtype=torch.uint8)
    for i, (path, _) in enumerate(pairs):
        img = _decode(path)
        if img.shape[1:] != (side, side):
            img = torch.nn.functional.interpolate(img[None].float(), size=(side, side), mode="bilinear",
                                                  antialias=True, align_corners=False)[0].round().clamp(0, 255)
        out[i] = img.to(torch.uint8)
    return out


def _build_cache(listing: FolderListing, side: int) -> dict:
    return {"version": CACHE_VERSION, "class_names": listing.class_names,
            "train_images": _decode_all(listing.train, side),
            "train_labels": torch.tensor([c for _, c in listing.train], dtype=torch.long),
            "test_images": _decode_all(listing.test, side),
            "test_labels": torch.tensor([c for _, c in listing.test], dtype=torch.long)}


def _write_atomic(obj: dict, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; a cache is as readable as any file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def memory_side(listing: FolderListing, memory_max_size: int) -> int | None:
    """The side of the in-memory tensors (the largest side of any image), or None when an image is
    larger than ``memory_max_size``. Reads image headers only."""
    side = 0
    for path, _ in (*listing.train, *listing.test):
        w, h = _image_size(path)
        side = max(side, w, h)
        if side > memory_max_size:
            return None
    return side


def load_cached(listing: FolderListing, memory_max_size: int, cache_dir: str | Path | None) -> dict | None:
    """The decoded folder from the cache, decoding it once if absent; None if images are too large."""
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    folder = folder / "image_folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageFolderError(f"data.cache_dir: cannot create {folder} ({exc}); set data.cache_dir to a "
                               "writable folder") from exc
    key = _cache_key(listing, memory_max_size)
    path = folder / f"{key}.pt"
    marker = folder / f"{key}.large"
    if marker.exists():
        return None
    with open(folder / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one decoder per machine; the others wait, then read
        if path.is_file():
            try:
                cached = torch.load(path, map_location="cpu", weights_only=True)
                if cached.get("version") == CACHE_VERSION:
                    STATS["cache_hits"] += 1
                    return cached
            except (OSError, RuntimeError, EOFError, ValueError):
                pass  # unreadable: decode again and replace it
        side = memory_side(listing, memory_max_size)
        if side is None:
            marker.touch()
            return None
        cached = _build_cache(listing, side)
        _write_atomic(cached, path)
        STATS["cache_writes"] += 1
        return cached


@DATASETS.register("image_folder")
def load_image_folder(root: str | Path, imbalance_ratio: float = 1.0, profile: str = "exp",
                      max_count: int | None = None, seed: int = 0, memory_max_size: int = 64,
                      cache_dir: str | Path | None = None,
                      test_per_class: int | None = None) -> InMemoryData | ImageListData:
    """The folder's train split made long-tailed (test split untouched, or at most ``test_per_class``
    images a class, picked with ``seed``), in memory when small."""
    listing = scan_folder(root)
    if test_per_class:
        test_labels = np.array([c for _, c in listing.test], dtype=np.int64)
        avail = np.bincount(test_labels, minlength=len(listing.class_names))
        tkeep = subsample_per_class(test_labels, np.minimum(avail, test_per_class).tolist(), seed)
    else:
        tkeep = np.arange(len(listing.test))
    labels = np.array([c for _, c in listing.train], dtype=np.int64)
    keep = long_tail_keep(labels, len(listing.class_names), imbalance_ratio, profile, max_count, seed)
    cached = load_cached(listing, memory_max_size, cache_dir) if memory_max_size > 0 else None
    if cached is not None:
        idx, tidx = torch.from_numpy(keep), torch.from_numpy(tkeep)
        return InMemoryData(cached["train_images"][idx], cached["train_labels"][idx], cached["test_images"][tidx],
                            cached["test_labels"][tidx], list(cached["class_names"]))
    train = [listing.train[i] for i in keep]
    listing.test = [listing.test[i] for i in tkeep]
    return ImageListData(ImageListDataset([p for p, _ in train], [c for _, c in train]),
                         ImageListDataset([p for p, _ in listing.test], [c for _, c in listing.test]),
                         listing.class_names)
