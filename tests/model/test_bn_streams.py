"""``model.bn_streams``: joint (one backbone forward over both streams) vs separate (one per stream)."""

from __future__ import annotations

import copy

import pytest
import torch

from hybridlt.model.hybrid import HybridObjective, create_hybrid_net
from hybridlt.model.losses import CrossEntropy, SupConLoss


def _objective(bn_streams):
    torch.manual_seed(0)
    net = create_hybrid_net("resnet8", 3, 3, proj_dim=16)
    return HybridObjective(net, SupConLoss(0.5, 3), CrossEntropy([5, 5, 5], 2), bn_streams).train()


def _batches():
    g = torch.Generator().manual_seed(1)
    con = torch.randn(6, 2, 3, 16, 16, generator=g) * 3 + 2  # the views: another distribution
    ce = torch.randn(8, 3, 16, 16, generator=g)
    return con, torch.tensor([0, 1, 2, 0, 1, 2]), ce, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])


def test_separate_normalises_each_stream_alone_and_keeps_running_stats_of_the_classifier_batch():
    obj = _objective("separate")
    ref = copy.deepcopy(obj.net)  # the expectation: plain forwards of each stream on their own
    con, cy, ce, ey = _batches()
    loss, con_loss, ce_loss = obj(con, cy, ce, ey, alpha=0.5)
    want_ce = torch.nn.functional.cross_entropy(ref(ce), ey)  # updates ref's running stats by ce only
    assert torch.allclose(ce_loss, want_ce, atol=1e-5)
    for a, b in zip(obj.net.backbone.modules(), ref.backbone.modules(), strict=True):
        if isinstance(a, torch.nn.BatchNorm2d):
            assert torch.allclose(a.running_mean, b.running_mean, atol=1e-6)
            assert torch.allclose(a.running_var, b.running_var, atol=1e-5)
            assert a.num_batches_tracked == b.num_batches_tracked == 1 and a.momentum == 0.1
    ref2 = copy.deepcopy(ref)
    z = ref2.embed(ref2.backbone(con.flatten(0, 1))).reshape(6, 2, -1)
    assert torch.allclose(con_loss, SupConLoss(0.5, 3)(z, cy), atol=1e-5)


def test_joint_mixes_the_streams_in_batchnorm_and_separate_does_not():
    con, cy, ce, ey = _batches()
    joint, separate = _objective("joint"), _objective("separate")
    _, _, ce_joint = joint(con, cy, ce, ey, alpha=0.5)
    _, _, ce_sep = separate(con, cy, ce, ey, alpha=0.5)
    assert not torch.allclose(ce_joint, ce_sep, atol=1e-3)  # the views shift the joint batch's statistics
    bn_j = next(m for m in joint.net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn_s = next(m for m in separate.net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.allclose(bn_j.running_mean, bn_s.running_mean)


def test_unknown_bn_streams_is_named():
    with pytest.raises(ValueError, match="model.bn_streams"):
        _objective("both")
