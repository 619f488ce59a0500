"""Samplers: determinism per (seed, epoch), sharding across ranks, draw frequencies, positives groups."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hybridlt.data.samplers import SAMPLERS, create_sampler

COUNTS = [200, 100, 50, 20, 5, 2, 1]  # 378 samples; the last two classes have fewer than K + 1 = 3
N = sum(COUNTS)


def _labels(seed=0):
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(len(COUNTS)), COUNTS))


def _sampler(kind, labels=None, batch_size=64, **kwargs):
    return create_sampler(kind, _labels() if labels is None else labels, batch_size, **kwargs)


@pytest.mark.parametrize("kind", SAMPLERS)
def test_deterministic_per_seed_and_epoch(kind):
    a, b = _sampler(kind, seed=5), _sampler(kind, seed=5)
    for epoch in (0, 3):
        np.testing.assert_array_equal(a.epoch_indices(epoch), b.epoch_indices(epoch))
    assert not np.array_equal(a.epoch_indices(0), a.epoch_indices(1))
    assert not np.array_equal(a.epoch_indices(0), _sampler(kind, seed=6).epoch_indices(0))
    assert not np.array_equal(a.epoch_indices(0), _sampler(kind, seed=5, salt=1).epoch_indices(0))


@pytest.mark.parametrize("kind", SAMPLERS)
def test_shapes_and_range(kind):
    s = _sampler(kind)
    assert s.steps_per_epoch == math.ceil(N / 64) == 6
    idx = s.epoch_indices(0)
    assert idx.shape == (6, 64) and idx.dtype == np.int64
    assert idx.min() >= 0 and idx.max() < N


@pytest.mark.parametrize("kind", SAMPLERS)
def test_two_ranks_split_each_global_batch(kind):
    whole = _sampler(kind, batch_size=64, seed=2)
    ranks = [_sampler(kind, batch_size=64, seed=2, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].steps_per_epoch == ranks[1].steps_per_epoch == whole.steps_per_epoch
    assert len(ranks[0]) == len(ranks[1]) == whole.steps_per_epoch * 32
    for epoch in (0, 1):
        glob = whole.epoch_indices(epoch)
        r0, r1 = (r.epoch_indices(epoch) for r in ranks)
        assert r0.shape == r1.shape == (whole.steps_per_epoch, 32)
        np.testing.assert_array_equal(r0, glob[:, :32])  # rank 0: the first half of every global batch
        np.testing.assert_array_equal(r1, glob[:, 32:])  # rank 1: the second half
        np.testing.assert_array_equal(np.concatenate([r0, r1], 1), glob)
        np.testing.assert_array_equal(ranks[0].global_indices(epoch), ranks[1].global_indices(epoch))


def test_random_ranks_see_disjoint_samples():
    # within one pass the random sampler never repeats a sample, so the ranks' shares are disjoint
    labels = _labels()[:256]
    r0, r1 = (_sampler("random", labels, 64, rank=r, world_size=2).epoch_indices(0) for r in range(2))
    assert not set(r0.ravel().tolist()) & set(r1.ravel().tolist())
    assert sorted(np.concatenate([r0.ravel(), r1.ravel()]).tolist()) == list(range(256))


def test_steps_per_epoch_rounds_up_and_num_samples():
    assert _sampler("random", batch_size=100).steps_per_epoch == 4
    assert _sampler("random", batch_size=1000).steps_per_epoch == 1
    s = _sampler("class_balanced", batch_size=10, num_samples=95)
    assert s.steps_per_epoch == 10 and len(s) == 100


def test_random_each_index_once_per_pass():
    s = _sampler("random", batch_size=50, num_samples=3 * N)  # 23 steps: 3 passes and a bit
    flat = s.global_indices(0).ravel()
    for p in range(3):
        assert sorted(flat[p * N:(p + 1) * N].tolist()) == list(range(N))
    tail = flat[3 * N:]
    assert len(tail) == 23 * 50 - 3 * N and len(set(tail.tolist())) == len(tail)
    assert not np.array_equal(flat[:N], flat[N:2 * N])  # a fresh permutation per pass


def _chi2(observed, expected):
    observed, expected = np.asarray(observed, float), np.asarray(expected, float)
    return float(((observed - expected) ** 2 / expected).sum())


def test_class_balanced_frequencies_uniform():
    labels = _labels()
    s = _sampler("class_balanced", labels, batch_size=100, num_samples=70_000)
    drawn = s.global_indices(0).ravel()
    freq = np.bincount(labels[drawn], minlength=7)
    # chi-square with 6 degrees of freedom: 99.99% quantile is about 27.9
    assert _chi2(freq, [10_000] * 7) < 28
    # instance-random would give the head class 200/378 of the draw
    assert abs(freq[0] / 70_000 - 1 / 7) < 0.01
    # within a class, every sample is reachable and roughly equally often
    per_sample = np.bincount(drawn[labels[drawn] == 1], minlength=N)[labels == 1]
    assert per_sample.min() > 0
    assert _chi2(per_sample, [freq[1] / 100] * 100) < 160  # 99 dof


def test_sqrt_frequencies_proportional_to_sqrt_count():
    labels = _labels()
    s = _sampler("sqrt", labels, batch_size=100, num_samples=70_000)
    freq = np.bincount(labels[s.global_indices(0).ravel()], minlength=7)
    p = np.sqrt(COUNTS) / np.sqrt(COUNTS).sum()
    assert _chi2(freq, 70_000 * p) < 28
    # hand value: class 0 gets sqrt(200) / sum(sqrt(n)) = 14.142 / 40.336 = 0.3506 of the draw
    assert abs(freq[0] / 70_000 - 0.3506) < 0.01


def test_class_aware_skips_empty_class():
    labels = np.array([0, 0, 2, 2, 2])  # class 1 has no sample
    s = _sampler("class_balanced", labels, batch_size=10, num_samples=2000)
    freq = np.bincount(labels[s.global_indices(0).ravel()], minlength=3)
    assert freq[1] == 0 and abs(freq[0] - 1000) < 100


def _split_groups(flat, labels, k):
    """Parse a positives draw into its groups (anchor + min(k, n_c - 1) others)."""
    sizes = np.bincount(labels)
    groups, i = [], 0
    while i < len(flat):
        size = 1 + min(k, sizes[labels[flat[i]]] - 1)
        groups.append(flat[i:i + size])
        i += size
    return groups


@pytest.mark.parametrize("k", [1, 2, 4])
def test_positives_groups_share_a_label(k):
    labels = _labels()
    s = _sampler("positives", labels, batch_size=60, positives=k, seed=9)
    flat = s.global_indices(0).ravel()
    groups = _split_groups(flat, labels, k)
    sizes = np.bincount(labels)
    for g in groups[:-1]:  # the last one may be cut at the end of the epoch
        assert len(set(labels[g].tolist())) == 1, g
        assert len(set(g.tolist())) == len(g)  # anchor and positives distinct
        assert len(g) == 1 + min(k, sizes[labels[g[0]]] - 1)
    last = groups[-1]
    assert len(set(labels[last].tolist())) == 1
    # anchors come from a random pass over the whole set: no anchor repeats in the first pass
    anchors = [int(g[0]) for g in groups]
    first_pass = anchors[:N]
    assert len(set(first_pass)) == len(first_pass)


def test_positives_small_classes_give_all_they_have():
    labels = _labels()
    s = _sampler("positives", labels, batch_size=60, positives=2, num_samples=4 * N, seed=1)
    groups = _split_groups(s.global_indices(0).ravel(), labels, 2)
    by_class = {c: sorted(np.flatnonzero(labels == c).tolist()) for c in (5, 6)}
    seen = {5: 0, 6: 0}
    for g in groups[:-1]:
        c = int(labels[g[0]])
        if c in by_class:
            assert sorted(g.tolist()) == by_class[c]  # both of class 5's samples; class 6's only one
            seen[c] += 1
    assert seen[5] >= 2 and seen[6] >= 1


def test_positives_checks_k():
    with pytest.raises(ValueError, match=r"sampler\.positives"):
        _sampler("positives", positives=0)


def test_errors_name_the_field():
    with pytest.raises(ValueError, match=r"train\.batch_size"):
        _sampler("random", batch_size=63, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        _sampler("random", rank=2, world_size=2)
    with pytest.raises(ValueError, match="sampler") as err:
        _sampler("balanced")
    assert "'balanced'" in str(err.value)


@pytest.mark.parametrize("kind", SAMPLERS)
def test_as_dataloader_sampler(kind):
    labels = _labels()
    dataset = torch.utils.data.TensorDataset(torch.arange(N), torch.from_numpy(labels))
    s = _sampler(kind, labels, batch_size=64, rank=1, world_size=2, seed=3)
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, sampler=s)
    assert len(s) == 6 * 32 and len(loader) == s.steps_per_epoch == 6
    s.set_epoch(2)
    batches = list(loader)
    assert len(batches) == 6
    got = torch.stack([b[0] for b in batches]).numpy()
    np.testing.assert_array_equal(got, s.epoch_indices(2))
    for idx, y in batches:
        assert torch.equal(y, torch.from_numpy(labels)[idx])
    s.set_epoch(3)
    assert not torch.equal(torch.stack([b[0] for b in loader]), torch.from_numpy(got))
