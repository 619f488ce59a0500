"""InMemoryStreams: step counts, shapes, labels and images of the sampled indices, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridlt.data.augment import BatchAugment
from hybridlt.data.memory import InMemoryData
from hybridlt.data.samplers import create_sampler
from hybridlt.data.streams import InMemoryStreams, LoaderStreams

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.3, 0.4]


def _data(n_per_class=(40, 20, 8, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.from_numpy(np.random.default_rng(seed).permutation(np.repeat(np.arange(4), n_per_class)))
    images = torch.randint(0, 256, (len(labels), 3, 6, 6), dtype=torch.uint8, generator=g)
    return InMemoryData(images, labels, images[:4], labels[:4], ["a", "b", "c", "d"])


def _streams(data, aug, batch_size=16, seed=0, rank=0, world_size=1):
    kw = dict(seed=seed, rank=rank, world_size=world_size)
    con = create_sampler("positives", data.train_labels.numpy(), batch_size, positives=2, salt=1, **kw)
    ce = create_sampler("class_balanced", data.train_labels.numpy(), batch_size, salt=2, **kw)
    return InMemoryStreams(data, con, ce, aug, seed=seed), con, ce


def _identity_aug():
    return BatchAugment(MEAN, STD, crop_padding=0, flip=False, grayscale_p=0.0, jitter=(0, 0, 0, 0), jitter_p=0)


@pytest.mark.parametrize(("rank", "world_size"), [(0, 1), (1, 2)])
def test_steps_shapes_labels_and_images_follow_the_samplers(rank, world_size):
    data = _data()
    aug = _identity_aug()
    streams, con, ce = _streams(data, aug, rank=rank, world_size=world_size)
    b = 16 // world_size
    assert streams.steps_per_epoch == con.steps_per_epoch == 5  # ceil(71 / 16)
    steps = list(streams.epoch(2))
    assert len(steps) == 5
    con_idx, ce_idx = con.epoch_indices(2), ce.epoch_indices(2)
    for s, (cx, cy, ex, ey) in enumerate(steps):
        assert cx.shape == (b, 2, 3, 6, 6) and ex.shape == (b, 3, 6, 6)
        assert cx.dtype == ex.dtype == torch.float32
        assert torch.equal(cy, data.train_labels[con_idx[s]])
        assert torch.equal(ey, data.train_labels[ce_idx[s]])
        # nothing random in the augmentation: every view is the normalised sampled image
        expected_con = (data.train_images[con_idx[s]].float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) \
            / torch.tensor(STD).view(1, 3, 1, 1)
        torch.testing.assert_close(cx[:, 0], expected_con)
        torch.testing.assert_close(cx[:, 1], expected_con)
        torch.testing.assert_close(ex, aug.normalize(data.train_images[ce_idx[s]]))


def test_streams_are_independent_samplers():
    data = _data()
    streams, con, ce = _streams(data, _identity_aug())
    cy = torch.cat([step[1] for step in streams.epoch(0)])
    ey = torch.cat([step[3] for step in streams.epoch(0)])
    assert not torch.equal(cy, ey)
    # the classifier stream is class-balanced: the tail class is far more frequent than its 3/71 share
    assert (ey == 3).float().mean().item() > 0.1


def _epoch(streams, epoch):
    return [torch.cat([t.flatten().float() for t in step]) for step in streams.epoch(epoch)]


def test_deterministic_per_seed_and_epoch():
    data = _data()
    aug = BatchAugment(MEAN, STD)
    a = _epoch(_streams(data, aug, seed=3)[0], 1)
    b = _epoch(_streams(data, aug, seed=3)[0], 1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    streams = _streams(data, aug, seed=3)[0]
    assert all(torch.equal(x, y) for x, y in zip(_epoch(streams, 1), _epoch(streams, 1), strict=True))
    other_epoch = _epoch(streams, 2)
    assert not any(torch.equal(x, y) for x, y in zip(a, other_epoch, strict=True))
    other_seed = _epoch(_streams(data, aug, seed=4)[0], 1)
    assert not any(torch.equal(x, y) for x, y in zip(a, other_seed, strict=True))


def test_augmentation_randomness_depends_on_seed_not_only_indices():
    # same samplers (same sampler seed), different stream seed: same labels, different pixels
    data = _data()
    aug = BatchAugment(MEAN, STD)
    con = create_sampler("random", data.train_labels.numpy(), 16, seed=0)
    ce = create_sampler("random", data.train_labels.numpy(), 16, seed=1)
    a = list(InMemoryStreams(data, con, ce, aug, seed=0).epoch(0))
    b = list(InMemoryStreams(data, con, ce, aug, seed=1).epoch(0))
    assert all(torch.equal(x[1], y[1]) and torch.equal(x[3], y[3]) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0][0], b[0][0])


def test_samplers_must_agree_on_steps():
    data = _data()
    con = create_sampler("random", data.train_labels.numpy(), 16)
    ce = create_sampler("random", data.train_labels.numpy(), 8)
    with pytest.raises(ValueError, match="steps per epoch"):
        InMemoryStreams(data, con, ce, _identity_aug())


class _Indexed(torch.utils.data.Dataset):
    """Sample i: an image filled with i (two views of it when ``views``) and label i % 4."""

    def __init__(self, n, views):
        self.n, self.views = n, views

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        x = torch.full((3, 2, 2), float(i))
        return (torch.stack([x, x]) if self.views else x), i % 4


def test_loader_streams_follow_sampler_epochs():
    labels = np.arange(40) % 4
    con_s = create_sampler("random", labels, 8, seed=0)
    ce_s = create_sampler("class_balanced", labels, 8, seed=1)
    con = torch.utils.data.DataLoader(_Indexed(40, True), batch_size=8, sampler=con_s)
    ce = torch.utils.data.DataLoader(_Indexed(40, False), batch_size=8, sampler=ce_s)
    streams = LoaderStreams(con, ce)
    assert streams.steps_per_epoch == 5
    steps = list(streams.epoch(3))
    assert len(steps) == 5 and con_s.epoch == ce_s.epoch == 3
    for s, (cx, cy, ex, ey) in enumerate(steps):
        assert cx.shape == (8, 2, 3, 2, 2) and ex.shape == (8, 3, 2, 2)
        assert cx[:, 0, 0, 0, 0].long().tolist() == con_s.epoch_indices(3)[s].tolist()
        assert ex[:, 0, 0, 0].long().tolist() == ce_s.epoch_indices(3)[s].tolist()
        assert torch.equal(cy, cx[:, 0, 0, 0, 0].long() % 4) and torch.equal(ey, ex[:, 0, 0, 0].long() % 4)
    assert streams.data_wait_s > 0  # five steps each waited on their two loaders


def test_augmentation_changes_across_epochs_even_for_identical_images():
    # every training image is the same, so only the augmentation's draws can differ between epochs
    base = _data()
    images = base.train_images[:1].expand(len(base.train_labels), -1, -1, -1).contiguous()
    data = InMemoryData(images, base.train_labels, base.test_images, base.test_labels, base.class_names)
    streams = _streams(data, BatchAugment(MEAN, STD), seed=5)[0]
    e0 = [step[0] for step in streams.epoch(0)]
    e1 = [step[0] for step in streams.epoch(1)]
    assert not any(torch.equal(a, b) for a, b in zip(e0, e1, strict=True))
    again = [step[0] for step in streams.epoch(0)]
    assert all(torch.equal(a, b) for a, b in zip(e0, again, strict=True))
