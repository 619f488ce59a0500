"""Long-tail profiles against the paper's hand values, shot groups and per-class subsampling."""

from __future__ import annotations

import numpy as np
import pytest

from hybridlt.data.long_tail import class_counts, long_tail_counts, shot_groups, subsample_per_class

CIFAR10_LT_100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_cifar10_ratio_100_matches_paper():
    counts = long_tail_counts(10, 5000, 100)
    assert counts == CIFAR10_LT_100
    assert sum(counts) == 12_406


@pytest.mark.parametrize(("ratio", "total"), [(100, 10_847), (50, 12_608), (10, 19_573)])
def test_cifar100_totals_match_paper(ratio, total):
    counts = long_tail_counts(100, 500, ratio)
    assert len(counts) == 100
    assert sum(counts) == total
    assert counts[0] == 500
    assert counts[-1] == 500 // ratio
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False))


def test_exp_profile_small_hand_values():
    # 50 * 10 ** (-i / 9), truncated
    assert long_tail_counts(10, 50, 10) == [50, 38, 29, 23, 17, 13, 10, 8, 6, 5]
    assert long_tail_counts(3, 100, 4) == [100, 50, 25]


def test_ratio_one_is_balanced_and_single_class():
    assert long_tail_counts(7, 33, 1) == [33] * 7
    assert long_tail_counts(1, 40, 100) == [40]
    assert long_tail_counts(1, 40, 100, "step") == [40]


def test_step_profile():
    assert long_tail_counts(10, 100, 10, "step") == [100] * 5 + [10] * 5
    # odd class count: the larger half is the tail
    assert long_tail_counts(5, 100, 3, "step") == [100, 100, 33, 33, 33]
    assert sum(long_tail_counts(100, 500, 100, "step")) == 50 * 500 + 50 * 5


@pytest.mark.parametrize("ratio", [0.5, 0, -3])
def test_bad_ratio_names_field(ratio):
    with pytest.raises(ValueError, match=r"data\.imbalance_ratio"):
        long_tail_counts(10, 100, ratio)


def test_bad_profile_names_field_and_choices():
    with pytest.raises(ValueError, match=r"data\.profile") as err:
        long_tail_counts(10, 100, 10, "linear")
    assert "'linear'" in str(err.value) and "exp" in str(err.value) and "step" in str(err.value)


def test_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        long_tail_counts(0, 100, 10)


def test_shot_groups_cifar100_ratio_100_is_35_35_30():
    counts = long_tail_counts(100, 500, 100)
    groups = shot_groups(counts)
    assert [len(groups[g]) for g in ("many", "medium", "few")] == [35, 35, 30]
    # contiguous: head classes first, tail last, and each class in exactly one group
    assert groups["many"] == list(range(35))
    assert groups["medium"] == list(range(35, 70))
    assert groups["few"] == list(range(70, 100))
    assert all(counts[c] > 100 for c in groups["many"])
    assert all(20 <= counts[c] <= 100 for c in groups["medium"])
    assert all(counts[c] < 20 for c in groups["few"])


@pytest.mark.parametrize("ratio", [100, 50, 10])
def test_cifar10_lt_has_no_few_class(ratio):
    groups = shot_groups(long_tail_counts(10, 5000, ratio))
    assert groups["few"] == []
    assert sorted(groups["many"] + groups["medium"]) == list(range(10))


def test_shot_group_boundaries_are_strict():
    # 100 is not many (> 100), 20 is not few (< 20)
    groups = shot_groups([101, 100, 20, 19, 0])
    assert groups == {"many": [0], "medium": [1, 2], "few": [3, 4]}
    assert shot_groups([5, 6], many_above=5, few_below=6) == {"many": [1], "medium": [], "few": [0]}


def test_class_counts():
    assert class_counts(np.array([2, 0, 2, 2]), 4) == [1, 0, 3, 0]


def _labels():
    rng = np.random.default_rng(123)
    return rng.permutation(np.repeat(np.arange(5), 40))  # 40 per class, shuffled


def test_subsample_keeps_exact_counts_and_source_order():
    labels = _labels()
    counts = [40, 25, 10, 3, 0]
    keep = subsample_per_class(labels, counts, seed=0)
    assert np.bincount(labels[keep], minlength=5).tolist() == counts
    assert np.all(np.diff(keep) > 0)  # sorted, no repeats
    assert keep.min() >= 0 and keep.max() < len(labels)


def test_subsample_deterministic_per_seed_and_differs_across_seeds():
    labels = _labels()
    counts = [30, 20, 10, 5, 1]
    a = subsample_per_class(labels, counts, seed=7)
    b = subsample_per_class(labels, counts, seed=7)
    c = subsample_per_class(labels, counts, seed=8)
    np.testing.assert_array_equal(a, b)
    assert set(a.tolist()) != set(c.tolist())
    # the choice within a class is spread, not always the first n of the class
    firsts = np.concatenate([np.flatnonzero(labels == k)[:n] for k, n in enumerate(counts)])
    assert set(a.tolist()) != set(firsts.tolist())


def test_subsample_too_many_requested():
    with pytest.raises(ValueError, match="class 2"):
        subsample_per_class(_labels(), [1, 1, 41, 1, 1], seed=0)
