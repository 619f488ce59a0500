"""The feature-branch and classifier-branch losses against naive, loop-based versions of PAPER.md's formulas.

The naive versions below are written independently of ``model/losses.py``: explicit Python loops
over anchors, float64 scalars, the equations read literally. The vectorised losses compute in
float32 internally, so comparisons use float32-level tolerances.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hybridlt.model.losses import (
    CLASSIFIER_LOSSES,
    CONTRASTIVE_LOSSES,
    CrossEntropy,
    FeatureCELoss,
    MPSCLoss,
    PSCLoss,
    SupConLoss,
    build_classifier_loss,
    build_contrastive_loss,
)

F64 = torch.float64
RTOL, ATOL = 1e-4, 1e-6


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = RTOL, atol: float = ATOL) -> bool:
    return torch.allclose(a.to(F64), b.to(F64), rtol=rtol, atol=atol)


def unit(*shape: int, seed: int) -> torch.Tensor:
    """Random L2-normalised float64 vectors (normalised along the last dim), a gradient leaf."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=F64)
    return (x / x.norm(dim=-1, keepdim=True)).requires_grad_()


def anchors(features: torch.Tensor, labels: torch.Tensor) -> tuple[list[torch.Tensor], list[int]]:
    """Every view as one anchor: ``[B, V, D]`` -> list of (z, y) in any order; ``[N, D]`` rows."""
    zs, ys = [], []
    if features.dim() == 2:
        for i in range(features.shape[0]):
            zs.append(features[i])
            ys.append(int(labels[i]))
        return zs, ys
    for b in range(features.shape[0]):
        for v in range(features.shape[1]):
            zs.append(features[b, v])
            ys.append(int(labels[b]))
    return zs, ys


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return sum(a[k] * b[k] for k in range(a.shape[0]))


def naive_supcon(features: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 2-3, averaged over the anchors with at least one positive (0 when there is none)."""
    zs, ys = anchors(features, labels)
    n = len(zs)
    per_anchor = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and ys[p] == ys[i]]
        if not positives:
            continue
        denom = sum(torch.exp(dot(zs[i], zs[a]) / tau) for a in range(n) if a != i)
        total = sum(torch.log(torch.exp(dot(zs[i], zs[p]) / tau) / denom) for p in positives)
        per_anchor.append(-total / len(positives))
    if not per_anchor:
        return (features * 0.0).sum()
    return sum(per_anchor) / len(per_anchor)


def normalised(p: torch.Tensor) -> torch.Tensor:
    return p / torch.sqrt(sum(p[k] ** 2 for k in range(p.shape[0])))


def naive_psc(features: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 4: -log(exp(z.p_y/t) / sum_{c != y} exp(z.p_c/t)), mean over every view."""
    zs, ys = anchors(features, labels)
    num_classes = prototypes.shape[0]
    losses = []
    for z, y in zip(zs, ys, strict=True):
        protos = [normalised(prototypes[c]) for c in range(num_classes)]
        numer = torch.exp(dot(z, protos[y]) / tau)
        denom = sum(torch.exp(dot(z, protos[c]) / tau) for c in range(num_classes) if c != y)
        losses.append(-torch.log(numer / denom))
    return sum(losses) / len(losses)


def naive_mpsc(features: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor, tau: float) -> torch.Tensor:
    """PAPER.md's MPSC: -sum_k w_k log(exp(z.p_y^k/t) / sum_{c != y} sum_k' exp(z.p_c^k'/t)), w without grad."""
    zs, ys = anchors(features, labels)
    num_classes, m = prototypes.shape[:2]
    losses = []
    for z, y in zip(zs, ys, strict=True):
        sims = [[dot(z, normalised(prototypes[c, k])) / tau for k in range(m)] for c in range(num_classes)]
        denom = sum(torch.exp(sims[c][k]) for c in range(num_classes) if c != y for k in range(m))
        own_exp = [torch.exp(sims[y][k]).detach() for k in range(m)]
        weights = [e / sum(own_exp) for e in own_exp]
        losses.append(-sum(weights[k] * torch.log(torch.exp(sims[y][k]) / denom) for k in range(m)))
    return sum(losses) / len(losses)


def random_labels(b: int, num_classes: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_classes, (b,), generator=g)


# ---------------------------------------------------------------------------------------------
# SupCon (Eq. 2-3)
# ---------------------------------------------------------------------------------------------


def check_supcon(features: torch.Tensor, labels: torch.Tensor, tau: float) -> None:
    got = SupConLoss(tau)(features, labels)
    want = naive_supcon(features, labels, tau)
    assert torch.isfinite(got)
    assert close(got, want), (got.item(), want.item())
    (g_got,) = torch.autograd.grad(got, features)
    (g_want,) = torch.autograd.grad(want, features)
    assert torch.isfinite(g_got).all()
    assert close(g_got, g_want, atol=1e-5), (g_got - g_want).abs().max()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("views", [2, 3])
def test_supcon_matches_naive_random_batches(seed: int, views: int):
    features = unit(7, views, 5, seed=seed)
    labels = random_labels(7, 3, seed + 100)
    check_supcon(features, labels, tau=0.1)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_supcon_matches_naive_temperatures(tau: float):
    features = unit(6, 2, 4, seed=11)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    check_supcon(features, labels, tau)


@pytest.mark.parametrize("views", [2, 3])
def test_supcon_singleton_classes(views: int):
    # Classes 3 and 4 have one sample: their anchors' only positives are their own other views.
    features = unit(5, views, 6, seed=3)
    labels = torch.tensor([0, 0, 1, 3, 4])
    check_supcon(features, labels, tau=0.1)
    # All classes singletons: every anchor has exactly V - 1 positives.
    check_supcon(unit(4, views, 6, seed=4), torch.tensor([0, 1, 2, 3]), tau=0.2)


def test_supcon_hand_value():
    # Sample 0's views are both e1, sample 1's both e2 (different labels). Every anchor has one
    # positive (dot 1) and two negatives (dot 0): L = -log(e^{1/t} / (e^{1/t} + 2)) = log(1 + 2 e^{-1/t}).
    tau = 0.5
    e1, e2 = torch.tensor([1.0, 0.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    features = torch.stack([torch.stack([e1, e1]), torch.stack([e2, e2])])
    got = SupConLoss(tau)(features, torch.tensor([0, 1]))
    assert got.item() == pytest.approx(math.log(1 + 2 * math.exp(-1 / tau)), rel=1e-6)


def test_supcon_single_view_some_anchors_without_positives():
    # [B, 1, D]: anchors of classes 1 and 3 have no positive at all; they must be skipped, not NaN.
    features = unit(6, 1, 5, seed=5)
    labels = torch.tensor([0, 0, 1, 2, 2, 3])
    check_supcon(features, labels, tau=0.1)
    # Anchors 2 and 5 contribute no term but still sit in the others' denominators A(i).
    got = SupConLoss(0.1)(features, labels)
    keep = [0, 1, 3, 4]
    assert not close(got, naive_supcon(features[keep], labels[keep], 0.1))


@pytest.mark.parametrize("b", [1, 2, 5])
def test_supcon_no_positives_at_all_is_zero_with_finite_gradient(b: int):
    features = unit(b, 1, 4, seed=6)
    labels = torch.arange(b)
    loss = SupConLoss(0.1)(features, labels)
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, features)
    assert torch.isfinite(grad).all()
    assert torch.count_nonzero(grad) == 0


# ---------------------------------------------------------------------------------------------
# PSC (Eq. 4) and MPSC (Eq. 5)
# ---------------------------------------------------------------------------------------------


def make_psc(num_classes: int, dim: int, tau: float, seed: int) -> PSCLoss:
    torch.manual_seed(seed)
    return PSCLoss(num_classes, dim, tau).double()


def make_mpsc(num_classes: int, dim: int, m: int, tau: float, seed: int) -> MPSCLoss:
    torch.manual_seed(seed)
    return MPSCLoss(num_classes, dim, m, tau).double()


def check_against(module, naive, features: torch.Tensor, labels: torch.Tensor) -> None:
    got = module(features, labels)
    want = naive(features, labels, module.prototypes, module.temperature)
    assert close(got, want), (got.item(), want.item())
    g_got = torch.autograd.grad(got, [features, module.prototypes])
    g_want = torch.autograd.grad(want, [features, module.prototypes])
    for a, b in zip(g_got, g_want, strict=True):
        assert torch.isfinite(a).all()
        assert close(a, b, atol=1e-5), (a - b).abs().max()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("views", [1, 2, 3])
def test_psc_matches_naive_bvd(seed: int, views: int):
    psc = make_psc(4, 5, tau=0.1, seed=seed)
    check_against(psc, naive_psc, unit(6, views, 5, seed=seed + 10), random_labels(6, 4, seed))


@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_psc_matches_naive_nd(tau: float):
    psc = make_psc(3, 4, tau=tau, seed=7)
    features = unit(9, 4, seed=8)
    labels = torch.tensor([0, 1, 2, 2, 2, 0, 1, 1, 0])
    check_against(psc, naive_psc, features, labels)


def test_psc_bvd_equals_flattened_nd():
    psc = make_psc(3, 4, tau=0.1, seed=9)
    features = unit(4, 2, 4, seed=10)
    labels = torch.tensor([2, 0, 2, 1])
    flat = torch.stack([features[b, v] for b in range(4) for v in range(2)])
    flat_labels = torch.tensor([int(labels[b]) for b in range(4) for _ in range(2)])
    assert close(psc(features, labels), psc(flat, flat_labels), rtol=1e-6)


def test_psc_positive_prototype_not_in_denominator_so_loss_can_be_negative():
    # z = p_0 = e1 and p_1 = p_2 = -e1 (prototype norms 3 and 0.5: they are normalised where used).
    # L = -(1/t) + log(2 e^{-1/t}) = log 2 - 2/t, negative for t = 1.
    psc = PSCLoss(3, 2, temperature=1.0).double()
    with torch.no_grad():
        psc.prototypes.copy_(torch.tensor([[3.0, 0.0], [-0.5, 0.0], [-0.5, 0.0]], dtype=F64))
    features = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]], dtype=F64)
    loss = psc(features, torch.tensor([0]))
    assert loss.item() == pytest.approx(math.log(2) - 2.0, rel=1e-6)
    assert loss.item() < 0


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("m", [1, 2, 3])
def test_mpsc_matches_naive(seed: int, m: int):
    mpsc = make_mpsc(4, 5, m, tau=0.1, seed=seed)
    check_against(mpsc, naive_mpsc, unit(5, 2, 5, seed=seed + 20), random_labels(5, 4, seed + 1))
    check_against(mpsc, naive_mpsc, unit(7, 5, seed=seed + 30), random_labels(7, 4, seed + 2))


def test_mpsc_weights_carry_no_gradient():
    # The same loss with weights that do carry a gradient has a different gradient: the naive
    # comparison above therefore pins down the "without gradient" part of the definition.
    mpsc = make_mpsc(3, 4, 3, tau=0.2, seed=4)
    features = unit(4, 2, 4, seed=5)
    labels = torch.tensor([0, 1, 2, 1])
    (g_impl,) = torch.autograd.grad(mpsc(features, labels), features)

    z, y = anchors(features, labels)
    protos = F.normalize(mpsc.prototypes, dim=-1)
    losses = []
    for zi, yi in zip(z, y, strict=True):
        sims = protos @ zi / mpsc.temperature  # [C, M]
        neg = torch.logsumexp(torch.cat([sims[c] for c in range(3) if c != yi]), 0)
        losses.append(-(torch.softmax(sims[yi], 0) * (sims[yi] - neg)).sum())
    (g_with,) = torch.autograd.grad(sum(losses) / len(losses), features)
    assert not close(g_impl, g_with, atol=1e-4)


def test_mpsc_with_one_prototype_equals_psc():
    psc = make_psc(5, 6, tau=0.3, seed=12)
    mpsc = MPSCLoss(5, 6, prototypes_per_class=1, temperature=0.3).double()
    assert tuple(psc.prototypes.shape) == (5, 6)
    assert tuple(mpsc.prototypes.shape) == (5, 1, 6)
    with torch.no_grad():
        mpsc.prototypes.copy_(psc.prototypes[:, None, :])
    features = unit(6, 2, 6, seed=13)
    labels = torch.tensor([0, 4, 4, 1, 3, 0])
    a, b = psc(features, labels), mpsc(features, labels)
    assert torch.equal(a, b)
    (ga_f, ga_p) = torch.autograd.grad(a, [features, psc.prototypes])
    (gb_f, gb_p) = torch.autograd.grad(b, [features, mpsc.prototypes])
    assert close(ga_f, gb_f, rtol=1e-6, atol=1e-9)
    assert close(ga_p, gb_p[:, 0], rtol=1e-6, atol=1e-9)


def test_prototype_losses_need_two_classes():
    with pytest.raises(ValueError, match="num_classes"):
        PSCLoss(1, 4)
    with pytest.raises(ValueError, match="num_classes"):
        MPSCLoss(1, 4, 2)


# ---------------------------------------------------------------------------------------------
# Batch order, feature-branch CE, registries
# ---------------------------------------------------------------------------------------------


def feature_losses() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [
        SupConLoss(0.1),
        PSCLoss(4, 5, 0.1),
        MPSCLoss(4, 5, 3, 0.1),
        FeatureCELoss(4, 5, 0.1),
    ]


@pytest.mark.parametrize("index", range(4))
def test_losses_invariant_to_batch_order(index: int):
    loss_fn = feature_losses()[index]
    g = torch.Generator().manual_seed(21)
    features = F.normalize(torch.randn(10, 2, 5, generator=g), dim=-1)
    labels = torch.tensor([0, 1, 1, 2, 3, 0, 0, 2, 1, 3])
    perm = torch.randperm(10, generator=g)
    assert not torch.equal(perm, torch.arange(10))
    a, b = loss_fn(features, labels), loss_fn(features[perm], labels[perm])
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    # Permuting features without their labels changes the loss (the check above is not vacuous).
    c = loss_fn(features[perm], labels)
    assert not torch.allclose(a, c, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(6, 2, 5), (6, 5)])
def test_feature_ce_equals_cross_entropy_on_scaled_linear(shape: tuple[int, ...]):
    torch.manual_seed(3)
    tau = 0.2
    loss_fn = FeatureCELoss(4, 5, tau)
    features = F.normalize(torch.randn(*shape), dim=-1)
    labels = torch.tensor([0, 3, 1, 1, 2, 0])
    zs, ys = anchors(features, labels)
    w, bias = loss_fn.classifier.weight, loss_fn.classifier.bias
    logits = torch.stack([(w @ z + bias) / tau for z in zs])
    want = F.cross_entropy(logits, torch.tensor(ys))
    by_hand = -sum(torch.log_softmax(logits[i], 0)[ys[i]] for i in range(len(ys))) / len(ys)
    got = loss_fn(features, labels)
    assert torch.allclose(got, want, rtol=1e-5)
    assert torch.allclose(got, by_hand, rtol=1e-5)


def test_build_contrastive_loss_by_name():
    assert isinstance(build_contrastive_loss("sc", 4, 5, temperature=0.1), SupConLoss)
    psc = build_contrastive_loss("psc", 4, 5, temperature=0.3)
    assert isinstance(psc, PSCLoss) and tuple(psc.prototypes.shape) == (4, 5) and psc.temperature == 0.3
    mpsc = build_contrastive_loss("mpsc", 4, 5, temperature=0.1, prototypes_per_class=3)
    assert type(mpsc) is MPSCLoss and tuple(mpsc.prototypes.shape) == (4, 3, 5)
    ce = build_contrastive_loss("ce", 4, 5, temperature=0.1)
    assert isinstance(ce, FeatureCELoss) and tuple(ce.classifier.weight.shape) == (4, 5)


def test_build_contrastive_loss_rejects_unknown_name():
    with pytest.raises(ValueError) as excinfo:
        build_contrastive_loss("supcon", 4, 5, temperature=0.1)
    message = str(excinfo.value)
    assert "loss.contrastive" in message and "supcon" in message
    for name in ("sc", "psc", "mpsc", "ce"):
        assert repr(name) in message
    assert set(CONTRASTIVE_LOSSES) == {"sc", "psc", "mpsc", "ce"}


def test_build_classifier_loss_rejects_unknown_name():
    with pytest.raises(ValueError) as excinfo:
        build_classifier_loss("focal-ish", [10, 5], epochs=3)
    message = str(excinfo.value)
    assert "loss.classifier" in message and "focal-ish" in message
    for name in CLASSIFIER_LOSSES:
        assert repr(name) in message


def test_cross_entropy_classifier_loss():
    loss_fn = build_classifier_loss("ce", [100, 10, 1], epochs=5)
    assert isinstance(loss_fn, CrossEntropy)
    assert loss_fn.class_counts.tolist() == [100.0, 10.0, 1.0]
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(8, 3, generator=g)
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 0, 1])
    by_hand = -sum(logits[i, labels[i]] - torch.logsumexp(logits[i], 0) for i in range(8)) / 8
    for epoch in (0, 4):
        got = loss_fn(logits, labels, epoch)
        assert torch.allclose(got, F.cross_entropy(logits, labels))
        assert torch.allclose(got, by_hand, rtol=1e-5)
    # Low-precision logits are computed in float32.
    assert loss_fn(logits.bfloat16(), labels).dtype == torch.float32


def test_supcon_class_sums_path_equals_mask_path():
    """With num_classes the positive sums come from a scatter; they must equal the same-label matrix path."""
    g = torch.Generator().manual_seed(11)
    z = torch.nn.functional.normalize(torch.randn(12, 2, 8, generator=g, dtype=torch.float64), dim=-1)
    y = torch.tensor([0, 3, 3, 1, 0, 5, 5, 5, 2, 0, 4, 1])
    za, zb = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    a, b = SupConLoss(0.2)(za, y), SupConLoss(0.2, num_classes=6)(zb, y)
    a.backward()
    b.backward()
    assert torch.allclose(a, b) and torch.allclose(za.grad, zb.grad)
