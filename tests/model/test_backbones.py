"""Backbones (CIFAR ResNets with option-A shortcuts, torchvision ResNet-50) and the hybrid network."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hybridlt.model.backbones import BACKBONES, BasicBlock, ZeroPadShortcut, create_backbone, resnet32
from hybridlt.model.hybrid import HybridNet, HybridObjective, create_hybrid_net
from hybridlt.model.losses import CrossEntropy, SupConLoss


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_blocks(module: nn.Module) -> int:
    return sum(isinstance(m, BasicBlock) for m in module.modules())


def test_resnet32_parameter_count_and_output():
    torch.manual_seed(0)
    net = resnet32()
    # The CIFAR ResNet-32 of He et al. has 0.46M parameters: 464,154 with a 10-way classifier (650).
    assert num_params(net) == 463_504
    assert num_params(resnet32(num_classes=10)) == 463_504 + 64 * 10 + 10
    assert net.feature_dim == 64
    assert count_blocks(net) == 15
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 64)
    assert (out >= 0).all()  # global average pool of a ReLU output


def test_option_a_shortcuts_have_no_parameters():
    net = resnet32()
    shortcuts = [m.shortcut for m in net.modules() if isinstance(m, BasicBlock)]
    padded = [s for s in shortcuts if isinstance(s, ZeroPadShortcut)]
    assert len(padded) == 2  # the first block of stages 2 and 3
    assert all(isinstance(s, nn.Identity | ZeroPadShortcut) for s in shortcuts)
    assert all(num_params(s) == 0 for s in shortcuts)


def test_zero_pad_shortcut_subsamples_and_zero_pads():
    torch.manual_seed(1)
    x = torch.randn(2, 16, 8, 8) + 5.0  # no input value is exactly 0
    out = BasicBlock(16, 32, stride=2).shortcut(x)
    assert out.shape == (2, 32, 4, 4)
    sub = torch.empty(2, 16, 4, 4)
    for i in range(4):
        for j in range(4):
            sub[:, :, i, j] = x[:, :, 2 * i, 2 * j]
    zero_channels = [c for c in range(32) if torch.count_nonzero(out[:, c]) == 0]
    assert len(zero_channels) == 16
    kept = [c for c in range(32) if c not in zero_channels]
    assert torch.equal(out[:, kept], sub)  # the input channels, in order, subsampled by 2
    assert kept == list(range(8, 24))  # symmetric padding: 8 zero channels on each side


def test_zero_pad_shortcut_odd_extra():
    x = torch.ones(1, 3, 4, 4)
    out = ZeroPadShortcut(5)(x)
    assert out.shape == (1, 8, 2, 2)
    assert out.sum().item() == 3 * 4


@pytest.mark.parametrize(("name", "blocks"), [("resnet8", 3), ("resnet20", 9), ("resnet32", 15)])
def test_cifar_resnet_depth(name: str, blocks: int):
    net = create_backbone(name)
    assert count_blocks(net) == blocks
    convs = sum(isinstance(m, nn.Conv2d) for m in net.modules())
    assert convs == 2 * blocks + 1  # 6n + 1 convolutions, + the classifier = 6n + 2 layers
    assert net.feature_dim == 64


@pytest.mark.parametrize("name", ["resnet8", "resnet20"])
def test_single_channel_small_input(name: str):
    torch.manual_seed(2)
    net = create_backbone(name, in_channels=1)
    assert net.conv1.weight.shape == (16, 1, 3, 3)
    assert net(torch.randn(3, 1, 8, 8)).shape == (3, 64)
    logits = create_backbone(name, num_classes=7, in_channels=1)(torch.randn(3, 1, 8, 8))
    assert logits.shape == (3, 7)


def test_resnet50_feature_dim_and_forward():
    torch.manual_seed(3)
    net = create_backbone("resnet50").eval()
    assert net.feature_dim == 2048
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 2048)


def test_create_backbone_unknown_name():
    with pytest.raises(ValueError) as excinfo:
        create_backbone("resnet34")
    message = str(excinfo.value)
    assert "backbone" in message and "resnet34" in message
    for name in ("resnet8", "resnet20", "resnet32", "resnet50"):
        assert repr(name) in message
    assert {"resnet8", "resnet20", "resnet32", "resnet50"} <= set(BACKBONES)


# ---------------------------------------------------------------------------------------------
# HybridNet / HybridObjective
# ---------------------------------------------------------------------------------------------


def tiny_objective(seed: int = 0) -> HybridObjective:
    torch.manual_seed(seed)
    net = create_hybrid_net("resnet8", num_classes=3, in_channels=1, proj_dim=16)
    return HybridObjective(net, SupConLoss(0.2), CrossEntropy([10, 5, 2], epochs=4))


def tiny_batches(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    con_x = torch.randn(4, 2, 1, 8, 8, generator=g)
    con_y = torch.tensor([0, 1, 1, 2])
    ce_x = torch.randn(5, 1, 8, 8, generator=g)
    ce_y = torch.tensor([2, 1, 0, 0, 1])
    return con_x, con_y, ce_x, ce_y


def test_hybrid_net_shapes_and_unit_norm_embedding():
    torch.manual_seed(4)
    net = HybridNet(create_backbone("resnet8", in_channels=1), num_classes=5, proj_dim=12)
    assert isinstance(net.head[0], nn.Linear) and net.head[0].out_features == 64  # hidden width d
    z = net.embed(torch.randn(6, 64) * 10)
    assert z.shape == (6, 12)
    assert torch.allclose(z.norm(dim=1), torch.ones(6), atol=1e-6)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 5)


def test_hybrid_objective_is_eq1():
    objective = tiny_objective().eval()  # eval: batch-norm statistics do not depend on the batch mix
    con_x, con_y, ce_x, ce_y = tiny_batches()
    alpha = 0.3
    with torch.no_grad():
        loss, con, ce = objective(con_x, con_y, ce_x, ce_y, alpha)
        net = objective.net
        z = F.normalize(net.head(net.backbone(con_x.reshape(8, 1, 8, 8))), dim=1).reshape(4, 2, -1)
        want_con = SupConLoss(0.2)(z, con_y)
        want_ce = F.cross_entropy(net.classifier(net.backbone(ce_x)), ce_y)
    assert torch.allclose(con, want_con, rtol=1e-5)
    assert torch.allclose(ce, want_ce, rtol=1e-5)
    assert torch.allclose(loss, alpha * want_con + (1 - alpha) * want_ce, rtol=1e-5)
    assert torch.allclose(loss, alpha * con + (1 - alpha) * ce, rtol=1e-6)


def test_hybrid_objective_trains_both_branches():
    objective = tiny_objective(1).train()
    loss, _, _ = objective(*tiny_batches(1), alpha=0.5)
    loss.backward()
    net = objective.net
    for module in (net.backbone, net.head, net.classifier):
        assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in module.parameters())


def test_hybrid_objective_frozen_trains_only_the_classifier():
    objective = tiny_objective(2).train()
    con_x, con_y, ce_x, ce_y = tiny_batches(2)
    alpha = 0.25
    loss, con, ce = objective(con_x, con_y, ce_x, ce_y, alpha, epoch=3, frozen=True)
    assert con.item() == 0.0
    assert torch.allclose(loss, (1 - alpha) * ce)
    loss.backward()
    net = objective.net
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in net.backbone.parameters())
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in net.head.parameters())
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in net.classifier.parameters())
