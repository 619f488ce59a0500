"""CIFAR-LT from small files written in torchvision's exact on-disk format."""

from __future__ import annotations

import hashlib
import pickle
import struct

import numpy as np
import pytest
import torch
import torchvision.datasets
import torchvision.datasets.cifar as tv_cifar

from hybridlt.data.cifar import DatasetFilesError, load_cifar_lt

PER_CLASS = 60  # CIFAR-10 train images per class
TEST_PER_CLASS = 7
C10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _hwc_images(rng, n):
    """Random uint8 images in HWC order (the order PIL and torchvision's ``.data`` use)."""
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def _rows(hwc):
    """The CIFAR row layout: 1024 red values, then 1024 green, then 1024 blue, each row-major."""
    return np.ascontiguousarray(hwc.transpose(0, 3, 1, 2).reshape(len(hwc), 3072))


class _Py2Pickler(pickle._Pickler):
    """Writes pickles as Python 2's cPickle wrote the CIFAR files: protocol 2, every str and bytes an
    8-bit BINSTRING (so reading them needs ``encoding="latin1"``), numpy under ``numpy.core``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_str8(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_str8
    dispatch[bytes] = _save_str8

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def _dump(path, obj):
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def test_fixture_pickles_read_like_the_real_files(tmp_path):
    write_cifar10(tmp_path)
    raw = (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    assert raw.startswith(b"\x80\x02}q\x00(U\x0bbatch_label") and b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    with pytest.raises(UnicodeDecodeError):  # as with the real files: latin1 is required
        pickle.loads(raw)
    entry = pickle.loads(raw, encoding="latin1")
    assert entry["data"].dtype == np.uint8 and entry["data"].shape == (120, 3072)


def write_cifar10(root, seed=0, per_class=PER_CLASS):
    """cifar-10-batches-py/ with data_batch_1..5, test_batch, batches.meta; returns (train_hwc, train_y, test...)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_y = rng.permutation(np.repeat(np.arange(10), per_class))
    train_hwc = _hwc_images(rng, len(train_y))
    rows = _rows(train_hwc)
    for b, part in enumerate(np.array_split(np.arange(len(train_y)), 5), 1):
        _dump(folder / f"data_batch_{b}", {
            "batch_label": f"training batch {b} of 5", "labels": train_y[part].tolist(), "data": rows[part],
            "filenames": [f"img_{i}.png" for i in part]})
    test_y = np.repeat(np.arange(10), TEST_PER_CLASS)[::-1].copy()
    test_hwc = _hwc_images(rng, len(test_y))
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test_y.tolist(),
                                  "data": _rows(test_hwc), "filenames": [f"t_{i}.png" for i in range(len(test_y))]})
    _dump(folder / "batches.meta", {"num_cases_per_batch": len(train_y) // 5, "label_names": C10_NAMES,
                                    "num_vis": 3072})
    return train_hwc, train_y, test_hwc, test_y


def write_cifar100(root, per_class=25):
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    fine = rng.permutation(np.repeat(np.arange(100), per_class))
    coarse = (fine * 7 + 3) % 20  # deliberately not monotone in fine
    hwc = _hwc_images(rng, len(fine))
    _dump(folder / "train", {"filenames": [f"f{i}.png" for i in range(len(fine))], "batch_label": "training batch",
                             "fine_labels": fine.tolist(), "coarse_labels": coarse.tolist(), "data": _rows(hwc)})
    test_fine = np.arange(100).repeat(2)
    test_hwc = _hwc_images(rng, len(test_fine))
    _dump(folder / "test", {"filenames": [f"t{i}.png" for i in range(len(test_fine))], "batch_label": "testing",
                            "fine_labels": test_fine.tolist(), "coarse_labels": ((test_fine * 7 + 3) % 20).tolist(),
                            "data": _rows(test_hwc)})
    names = [f"fine_{i:03d}" for i in range(100)]
    _dump(folder / "meta", {"fine_label_names": names, "coarse_label_names": [f"coarse_{i}" for i in range(20)]})
    return hwc, fine, test_hwc, test_fine, names


def _chw(hwc):
    return torch.from_numpy(np.ascontiguousarray(hwc.transpose(0, 3, 1, 2)))


def _digest(chw_image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(chw_image).tobytes()).hexdigest()


def _source_positions(kept_images: torch.Tensor, source_hwc: np.ndarray) -> list[int]:
    """For each kept image, the position of the identical source image (content identity)."""
    table = {_digest(img.transpose(2, 0, 1)): i for i, img in enumerate(source_hwc)}
    assert len(table) == len(source_hwc)  # random images are distinct
    return [table[_digest(img.numpy())] for img in kept_images]


def test_cifar10_lt_counts_and_contents(tmp_path):
    train_hwc, train_y, test_hwc, test_y = write_cifar10(tmp_path)
    data = load_cifar_lt("cifar10", tmp_path, imbalance_ratio=10, max_count=50, seed=3)

    expected = [50, 38, 29, 23, 17, 13, 10, 8, 6, 5]
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert tuple(data.train_images.shape) == (sum(expected), 3, 32, 32)
    assert torch.bincount(data.train_labels, minlength=10).tolist() == expected
    assert data.class_names == C10_NAMES
    assert data.num_classes == 10 and data.in_channels == 3

    # every kept image is a real source row of the class it is labelled with, each used once,
    # in source order, with channel / row / column in the CHW positions
    pos = _source_positions(data.train_images, train_hwc)
    assert pos == sorted(set(pos))
    np.testing.assert_array_equal(train_y[pos], data.train_labels.numpy())
    assert torch.equal(data.train_images, _chw(train_hwc[pos]))
    i = pos[5]
    assert data.train_images[5, 0, 0, 1].item() == train_hwc[i, 0, 1, 0]  # red, row 0, column 1
    assert data.train_images[5, 2, 31, 0].item() == train_hwc[i, 31, 0, 2]  # blue, row 31, column 0

    # test set untouched: all of it, in file order
    assert torch.equal(data.test_images, _chw(test_hwc))
    assert data.test_labels.tolist() == test_y.tolist()


def test_cifar10_matches_torchvision_reading_the_same_files(tmp_path, monkeypatch):
    write_cifar10(tmp_path)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)  # our files have other md5s
    ref_train = torchvision.datasets.CIFAR10(str(tmp_path), train=True)
    ref_test = torchvision.datasets.CIFAR10(str(tmp_path), train=False)
    # ratio 1 with the full per-class count keeps everything
    data = load_cifar_lt("cifar10", tmp_path, imbalance_ratio=1, seed=0)
    assert torch.equal(data.train_images, torch.from_numpy(ref_train.data).permute(0, 3, 1, 2))
    assert data.train_labels.tolist() == ref_train.targets
    assert torch.equal(data.test_images, torch.from_numpy(ref_test.data).permute(0, 3, 1, 2))
    assert data.test_labels.tolist() == ref_test.targets
    assert data.class_names == ref_train.classes


def test_default_max_count_is_smallest_class(tmp_path):
    write_cifar10(tmp_path)
    data = load_cifar_lt("cifar10", tmp_path, imbalance_ratio=2, seed=0)
    counts = torch.bincount(data.train_labels, minlength=10).tolist()
    assert counts[0] == PER_CLASS and counts[-1] == PER_CLASS // 2


def test_step_profile(tmp_path):
    write_cifar10(tmp_path)
    data = load_cifar_lt("cifar10", tmp_path, imbalance_ratio=4, profile="step", max_count=40)
    assert torch.bincount(data.train_labels, minlength=10).tolist() == [40] * 5 + [10] * 5


def test_deterministic_per_seed(tmp_path):
    write_cifar10(tmp_path)
    a = load_cifar_lt("cifar10", tmp_path, imbalance_ratio=10, max_count=50, seed=11)
    b = load_cifar_lt("cifar10", tmp_path, imbalance_ratio=10, max_count=50, seed=11)
    c = load_cifar_lt("cifar10", tmp_path, imbalance_ratio=10, max_count=50, seed=12)
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.train_labels, b.train_labels)
    assert torch.equal(torch.bincount(a.train_labels), torch.bincount(c.train_labels))
    assert not torch.equal(a.train_images, c.train_images)
    assert torch.equal(a.test_images, c.test_images)


def test_cifar100_uses_fine_labels(tmp_path):
    hwc, fine, test_hwc, test_fine, names = write_cifar100(tmp_path)
    data = load_cifar_lt("cifar100", tmp_path, imbalance_ratio=10, max_count=20, seed=0)
    counts = torch.bincount(data.train_labels, minlength=100).tolist()
    assert counts[:10] == [20, 19, 19, 18, 18, 17, 17, 16, 16, 16]
    assert counts[-1] == 2 and sum(counts) == 737
    assert data.class_names == names
    pos = _source_positions(data.train_images, hwc)
    np.testing.assert_array_equal(fine[pos], data.train_labels.numpy())
    assert torch.equal(data.test_images, _chw(test_hwc))
    assert data.test_labels.tolist() == test_fine.tolist()


def test_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(DatasetFilesError) as err:
        load_cifar_lt("cifar10", tmp_path / "nowhere", download=False)
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg
    assert "data.download" in msg and "CIFAR10" in msg
    assert isinstance(err.value, FileNotFoundError)

    with pytest.raises(DatasetFilesError) as err:
        load_cifar_lt("cifar100", tmp_path)
    assert str(tmp_path / "cifar-100-python") in str(err.value) and "CIFAR100" in str(err.value)


def test_one_missing_file_is_named(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DatasetFilesError, match="data_batch_4") as err:
        load_cifar_lt("cifar10", tmp_path)
    assert "data_batch_1" not in str(err.value)


@pytest.mark.parametrize("name", ["data_batch_3", "test_batch", "batches.meta"])
@pytest.mark.parametrize("keep", [0.5, 0.01])
def test_truncated_pickle_names_the_file(tmp_path, name, keep):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / name
    raw = path.read_bytes()
    path.write_bytes(raw[: max(1, int(len(raw) * keep))])
    with pytest.raises(DatasetFilesError) as err:
        load_cifar_lt("cifar10", tmp_path)
    assert str(path) in str(err.value)


def test_pickle_without_expected_keys(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    _dump(path, {"data": np.zeros((1, 3072), np.uint8), "fine_labels": [0]})
    with pytest.raises(DatasetFilesError, match="data_batch_2"):
        load_cifar_lt("cifar10", tmp_path)


def test_download_true_calls_torchvision_then_loads(tmp_path, monkeypatch):
    calls = []

    def fake_cifar10(root, train=True, download=False):
        calls.append((root, train, download))
        write_cifar10(tmp_path)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10)
    data = load_cifar_lt("cifar10", tmp_path, imbalance_ratio=10, max_count=50, download=True)
    assert calls == [(str(tmp_path.resolve()), True, True)]
    assert len(data.train_labels) == 199

    # present files: no download
    calls.clear()
    load_cifar_lt("cifar10", tmp_path, imbalance_ratio=10, max_count=50, download=True)
    assert calls == []


def test_download_that_leaves_files_missing_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", lambda *a, **k: None)
    with pytest.raises(DatasetFilesError, match="cifar-100-python"):
        load_cifar_lt("cifar100", tmp_path, download=True)


def test_max_count_larger_than_available_names_field(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(ValueError, match=r"data\.max_count"):
        load_cifar_lt("cifar10", tmp_path, imbalance_ratio=10, max_count=PER_CLASS + 1)


@pytest.mark.parametrize("preset", ["cifar10_lt.yaml", "cifar100_lt.yaml", "cifar10_lt_psc.yaml"])
def test_offline_data_stats_is_one_line_and_leaves_no_empty_folder(tmp_path, monkeypatch, capsys, preset):
    """The README's `data stats` on a CIFAR preset, on a machine without the files or a network: as
    shipped (download: false) and with download: true against a network that is not there (urllib's
    URLError, as torchvision raises it offline). One line naming the field, exit 2, nothing created."""
    import urllib.error
    from pathlib import Path

    from hybridlt.cli import main

    def offline(*args, **kwargs):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    config = str(Path(__file__).resolve().parents[2] / "configs" / preset)
    cache = tmp_path / "data_cache"
    for extra, field in ([], "data.root"), (["--set", "data.download=true"], "data.download"):
        code = main(["data", "stats", "--config", config, "--set", f"data.root={cache}", *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
        assert err[0].startswith(f"error: {field}: ") and str(cache) in err[0], err
        if field == "data.download":
            assert "name resolution" in err[0] and "data.download: false" in err[0]
        assert not cache.exists()  # no empty data_cache/ left behind
