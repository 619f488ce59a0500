"""The embedded digits-LT dataset: balanced test, long-tailed train, no overlap; InMemoryData."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from hybridlt.data.digits import load_digits_lt
from hybridlt.data.long_tail import long_tail_counts
from hybridlt.data.memory import InMemoryData


@pytest.fixture(scope="module")
def source():
    """Content key -> (sklearn index, label), with images scaled 0..16 -> 0..255 as documented."""
    bunch = load_digits()
    scaled = np.rint(bunch.images * 255.0 / 16.0).astype(np.uint8)
    table = {img.tobytes(): (i, int(y)) for i, (img, y) in enumerate(zip(scaled, bunch.target, strict=True))}
    assert len(table) == len(scaled)  # all 1,797 images distinct, so content identifies the index
    return table


@pytest.fixture(scope="module")
def digits():
    return load_digits_lt(imbalance_ratio=10, max_count=100, test_per_class=50, seed=4)


def _indices(images: torch.Tensor, labels: torch.Tensor, table) -> list[int]:
    out = []
    for img, y in zip(images, labels, strict=True):
        index, label = table[img[0].numpy().tobytes()]  # KeyError: not a (scaled) digits image
        assert label == y.item()
        out.append(index)
    return out


def test_shapes_and_dtypes(digits):
    assert digits.train_images.dtype == torch.uint8 and digits.test_images.dtype == torch.uint8
    assert digits.train_images.shape[1:] == (1, 8, 8) and digits.test_images.shape[1:] == (1, 8, 8)
    assert digits.train_labels.dtype == torch.int64 and digits.test_labels.dtype == torch.int64
    assert digits.class_names == [str(c) for c in range(10)]
    assert digits.num_classes == 10 and digits.in_channels == 1
    assert digits.train_images.max().item() == 255  # 16 -> 255


def test_balanced_test_set(digits):
    assert torch.bincount(digits.test_labels, minlength=10).tolist() == [50] * 10


def test_long_tailed_train_counts(digits):
    counts = torch.bincount(digits.train_labels, minlength=10).tolist()
    assert counts == long_tail_counts(10, 100, 10)
    assert counts == [100, 77, 59, 46, 35, 27, 21, 16, 12, 10]


def test_train_and_test_are_disjoint_real_images(digits, source):
    train = _indices(digits.train_images, digits.train_labels, source)
    test = _indices(digits.test_images, digits.test_labels, source)
    assert len(set(train)) == len(train) and len(set(test)) == len(test)
    assert not set(train) & set(test)


def test_step_profile():
    data = load_digits_lt(imbalance_ratio=5, max_count=60, test_per_class=20, profile="step")
    assert torch.bincount(data.train_labels, minlength=10).tolist() == [60] * 5 + [12] * 5
    assert torch.bincount(data.test_labels, minlength=10).tolist() == [20] * 10


def test_deterministic_per_seed(source):
    a = load_digits_lt(imbalance_ratio=10, max_count=80, test_per_class=30, seed=1)
    b = load_digits_lt(imbalance_ratio=10, max_count=80, test_per_class=30, seed=1)
    c = load_digits_lt(imbalance_ratio=10, max_count=80, test_per_class=30, seed=2)
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert set(_indices(a.test_images, a.test_labels, source)) != set(_indices(c.test_images, c.test_labels, source))
    assert set(_indices(a.train_images, a.train_labels, source)) != set(
        _indices(c.train_images, c.train_labels, source))


def test_max_count_limit():
    # the smallest digit class (8) has 174 images: 50 go to test, 124 remain
    assert len(load_digits_lt(imbalance_ratio=1, max_count=124, test_per_class=50).train_labels) == 1240
    with pytest.raises(ValueError, match=r"data\.max_count: 125") as err:
        load_digits_lt(imbalance_ratio=1, max_count=125, test_per_class=50)
    assert "124" in str(err.value)


def test_test_per_class_too_large():
    with pytest.raises(ValueError, match=r"data\.test_per_class"):
        load_digits_lt(max_count=10, test_per_class=174)


def test_channel_stats_and_to():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (20, 3, 4, 4), dtype=torch.uint8, generator=g)
    x[:, 2] = 7  # a constant channel: std clamped to 1e-3
    data = InMemoryData(x, torch.zeros(20, dtype=torch.long), x[:2], torch.zeros(2, dtype=torch.long), ["a"])
    mean, std = data.channel_stats()
    xs = x.double().numpy() / 255
    np.testing.assert_allclose(mean, [xs[:, c].mean() for c in range(3)], rtol=1e-5)
    np.testing.assert_allclose(std[:2], [xs[:, c].std(ddof=1) for c in range(2)], rtol=1e-4)
    assert std[2] == pytest.approx(1e-3)
    moved = data.to("cpu")
    assert torch.equal(moved.train_images, x) and moved.class_names == ["a"]
    assert Counter(moved.train_labels.tolist()) == {0: 20}


def test_bundled_csv_reads_what_sklearn_loads():
    """digits_arrays reads the bundled file itself: the same pixels and labels as sklearn's loader."""
    from hybridlt.data.digits import digits_arrays

    bunch = load_digits()
    images, target = digits_arrays()
    assert images.shape == (1797, 8, 8) and target.dtype == np.int64
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(target, bunch.target)


def test_falls_back_to_sklearn_without_the_bundled_file(monkeypatch, tmp_path):
    """With no CSV where it is looked for (another package layout), sklearn's own loader is used."""
    import types

    from hybridlt.data import digits as mod

    looked_up = []

    def find_spec(name, *args):
        looked_up.append(name)  # an empty folder where the package would be: no datasets/data/
        return types.SimpleNamespace(submodule_search_locations=[str(tmp_path)])

    monkeypatch.setattr(mod.importlib.util, "find_spec", find_spec)
    images, target = mod.digits_arrays()
    np.testing.assert_array_equal(images, load_digits().images)
    np.testing.assert_array_equal(target, load_digits().target)
    assert looked_up == ["sklearn"]


def test_loading_digits_does_not_import_sklearn():
    """A trial process that only reads digits does not pay scikit-learn's import (1.4 s here)."""
    import subprocess
    import sys

    code = ("import sys; from hybridlt.data.digits import load_digits_lt; d = load_digits_lt(); "
            "print(len(d.train_labels), 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(sum(long_tail_counts(10, 120, 20))), "False"]
