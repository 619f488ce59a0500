"""``data.dataset: image_folder`` on real CIFAR-10 JPEGs pulled from the shared archive, and on
small synthetic folders: classes, long-tail counts, the decode-once cache, the large-image path."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import write_png

from hybridlt.data import image_folder as F
from hybridlt.data.image_list import ImageListData
from hybridlt.data.long_tail import long_tail_counts
from hybridlt.data.memory import InMemoryData
from tests.conftest import CIFAR_CLASSES as CLASSES
from tests.conftest import CIFAR_TEST_PER_CLASS as TEST_PER_CLASS
from tests.conftest import CIFAR_TRAIN_PER_CLASS as TRAIN_PER_CLASS


@pytest.fixture
def counting(monkeypatch):
    """Counts the decodes into the cache (the module's decoder, wrapped)."""
    calls = []
    real = F.decode_rgb
    monkeypatch.setattr(F, "decode_rgb", lambda path, *a: calls.append(path) or real(path, *a))
    return calls


def test_real_folder_classes_counts_and_pixels(cifar_folder, tmp_path, counting):
    data = F.load_image_folder(cifar_folder, 10, "exp", None, 0, cache_dir=tmp_path)
    assert isinstance(data, InMemoryData) and data.class_names == CLASSES
    want = long_tail_counts(10, TRAIN_PER_CLASS, 10)  # 40, 31, ..., 4: class 0 the largest (ties: name order)
    assert np.bincount(data.train_labels.numpy(), minlength=10).tolist() == want
    assert np.bincount(data.test_labels.numpy(), minlength=10).tolist() == [TEST_PER_CLASS] * 10
    assert data.train_images.shape[1:] == (3, 32, 32) and data.train_images.dtype == torch.uint8
    # the first test image is test/airplane/0000.jpg: the same pixels as PIL decodes them
    pil = np.asarray(Image.open(cifar_folder / "test" / "airplane" / "0000.jpg").convert("RGB"))
    assert np.abs(data.test_images[0].permute(1, 2, 0).numpy().astype(int) - pil.astype(int)).max() <= 2
    assert len(counting) == 10 * (TRAIN_PER_CLASS + TEST_PER_CLASS)  # the whole folder, once


def test_second_load_reuses_the_cache_and_a_changed_file_invalidates_it(cifar_folder, tmp_path, counting):
    first = F.load_image_folder(cifar_folder, 1, cache_dir=tmp_path)
    decoded = len(counting)
    assert decoded == 600
    again = F.load_image_folder(cifar_folder, 10, "exp", 30, seed=3, cache_dir=tmp_path)  # other options: same cache
    assert len(counting) == decoded
    assert torch.equal(again.test_images, first.test_images)
    assert len(list((tmp_path / "image_folder").glob("*.pt"))) == 1
    path = cifar_folder / "train" / "cat" / "0000.jpg"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    F.load_image_folder(cifar_folder, 1, cache_dir=tmp_path)
    assert len(counting) == 2 * decoded  # the key holds every file's size and mtime


def _png_folder(root, counts, side=8, test=1):
    for name, n in counts.items():
        for split, k in (("train", n), ("test", test)):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(k):
                write_png(torch.full((3, side, side), 10 * i, dtype=torch.uint8), str(root / split / name / f"{i}.png"))
    return root


def test_an_imbalanced_folder_ranks_classes_by_count_and_ratio_one_keeps_it(tmp_path):
    root = _png_folder(tmp_path / "imgs", {"ant": 3, "bee": 9, "cow": 6})
    kept = F.load_image_folder(root, 1, cache_dir=tmp_path / "c")
    assert np.bincount(kept.train_labels.numpy()).tolist() == [3, 9, 6]
    lt = F.load_image_folder(root, 9, "exp", None, 0, cache_dir=tmp_path / "c")
    # ranks: bee (9) -> 9, cow (6) -> int(9 / 3) = 3, ant (3) -> int(9 / 9) = 1
    assert np.bincount(lt.train_labels.numpy()).tolist() == [1, 9, 3] and lt.class_names == ["ant", "bee", "cow"]


def test_larger_images_go_through_the_loader_path(tmp_path):
    root = _png_folder(tmp_path / "big", {"a": 2, "b": 2}, side=80)
    data = F.load_image_folder(root, 1, memory_max_size=64, cache_dir=tmp_path / "c")
    assert isinstance(data, ImageListData) and data.class_names == ["a", "b"]
    assert data.train.labels == [0, 0, 1, 1] and data.train[0][0].shape == (3, 80, 80)
    small = F.load_image_folder(root, 1, memory_max_size=80, cache_dir=tmp_path / "c")
    assert isinstance(small, InMemoryData)


def test_folder_errors_name_the_folder(tmp_path):
    (tmp_path / "x" / "train").mkdir(parents=True)
    with pytest.raises(F.ImageFolderError, match="train/ and test/"):
        F.load_image_folder(tmp_path / "x", cache_dir=tmp_path / "c")
    root = _png_folder(tmp_path / "y", {"a": 1})
    (root / "test" / "zebra").mkdir()
    with pytest.raises(F.ImageFolderError, match="zebra.*not a class"):
        F.load_image_folder(root, cache_dir=tmp_path / "c")


def test_classes_without_a_test_image_are_named_in_one_warning(tmp_path, capsys):
    """A class folder missing (or empty) under test/ trains as usual; one stderr line names it."""
    root = _png_folder(tmp_path / "z", {"ant": 2, "bee": 2, "cow": 2})
    for f in (root / "test" / "bee").iterdir():
        f.unlink()  # an empty class folder
    for f in (root / "test" / "cow").iterdir():
        f.unlink()
    (root / "test" / "cow").rmdir()  # a missing one
    data = F.load_image_folder(root, cache_dir=tmp_path / "c")
    assert np.bincount(data.test_labels.numpy(), minlength=3).tolist()[1:] == [0, 0]
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 1 and "2 of 3 classes (bee, cow)" in lines[0] and str(root / "test") in lines[0]
    full = _png_folder(tmp_path / "full", {"ant": 1, "bee": 1})
    F.load_image_folder(full, cache_dir=tmp_path / "c")
    assert capsys.readouterr().err == ""


def _formats_folder(root):
    """One class per format, each image a known 8x8 gradient: values PIL writes, read back by hand."""
    grad = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1024 + 300)  # 16-bit values 300 .. 64812
    rgb = np.stack([grad >> 8, (grad >> 8)[::-1], np.full((8, 8), 7)], -1).astype(np.uint8)
    files = {"bmp": lambda p: Image.fromarray(rgb).save(p.with_suffix(".bmp")),
             "tif": lambda p: Image.fromarray(rgb).save(p.with_suffix(".tif")),
             "tif16": lambda p: Image.fromarray(grad).save(p.with_suffix(".tiff")),
             "png16": lambda p: Image.fromarray(grad).save(p.with_suffix(".png"))}
    for name, save in files.items():
        for split in ("train", "test"):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            save(root / split / name / "0")
    grey = torch.from_numpy((grad >> 8).astype(np.uint8)).expand(3, 8, 8)
    return root, {"bmp": torch.from_numpy(rgb).permute(2, 0, 1), "tif": torch.from_numpy(rgb).permute(2, 0, 1),
                  "tif16": grey, "png16": grey}


@pytest.mark.parametrize("memory_max_size", [64, 4])  # the in-memory cache; the DataLoader path
def test_bmp_tiff_and_16_bit_images_decode_to_their_8_bit_pixels(tmp_path, memory_max_size):
    root, expected = _formats_folder(tmp_path / "f")
    data = F.load_image_folder(root, 1, memory_max_size=memory_max_size, cache_dir=tmp_path / "c")
    for i, name in enumerate(data.class_names):
        if isinstance(data, InMemoryData):
            image = data.train_images[data.train_labels.tolist().index(i)]
        else:
            assert memory_max_size == 4
            image = data.train.__class__(data.train.paths, data.train.labels)[data.train.labels.index(i)][0]
        assert image.dtype == torch.uint8 and torch.equal(image, expected[name]), name


@pytest.mark.parametrize("content", [b"", b"not an image at all", "truncated"])
def test_a_broken_image_is_one_error_naming_it_on_both_paths(tmp_path, content, cifar_folder):
    root = _png_folder(tmp_path / "b", {"a": 2, "b": 2})
    bad = root / "train" / "a" / "bad.jpg"
    jpeg = next((cifar_folder / "train").rglob("*.jpg")).read_bytes()
    bad.write_bytes(jpeg[:400] if content == "truncated" else content)
    for memory_max_size in (64, 0):
        with pytest.raises(F.InputError, match=f"{bad}: cannot decode image"):
            data = F.load_image_folder(root, 1, memory_max_size=memory_max_size, cache_dir=tmp_path / "c")
            for i in range(len(data.train)):  # the DataLoader path decodes on read
                data.train[i]


def test_max_count_above_the_largest_class_starts_the_profile_from_it(tmp_path):
    """30 images a class, max_count 120, ratio 10: the kept counts go 30 -> 3 (imbalance 10), not
    min(30, 120 -> 12) = 30 ... 12 (imbalance 2.5); a max_count below 30 caps the largest class."""
    root = tmp_path / "flat"
    for c in range(10):
        for split, n in (("train", 30), ("test", 1)):
            (root / split / f"c{c}").mkdir(parents=True, exist_ok=True)
            for i in range(n):
                write_png(torch.full((3, 4, 4), 8 * i + c, dtype=torch.uint8), str(root / split / f"c{c}" / f"{i}.png"))
    for max_count in (120, 30, None):
        data = F.load_image_folder(root, 10, "exp", max_count, 0, cache_dir=tmp_path / "c")
        counts = np.bincount(data.train_labels.numpy(), minlength=10).tolist()
        assert counts == long_tail_counts(10, 30, 10, "exp") and max(counts) / min(counts) == 10, max_count
    capped = F.load_image_folder(root, 10, "exp", 20, 0, cache_dir=tmp_path / "c")
    assert np.bincount(capped.train_labels.numpy(), minlength=10).tolist() == long_tail_counts(10, 20, 10, "exp")
    kept = F.load_image_folder(root, 1, "exp", 120, 0, cache_dir=tmp_path / "c")  # ratio 1: the folder as it is
    assert np.bincount(kept.train_labels.numpy(), minlength=10).tolist() == [30] * 10
