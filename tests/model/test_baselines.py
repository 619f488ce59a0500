"""Classifier-branch baselines against naive per-sample computations (value and gradient) and
hand values: focal, class-balanced, LDAM(-DRW), logit adjustment, balanced softmax."""

from __future__ import annotations

import math

import pytest
import torch

from hybridlt.data.long_tail import long_tail_counts
from hybridlt.model.hybrid import CosineLinear, create_hybrid_net
from hybridlt.model.losses import CLASSIFIER_LOSSES, build_classifier_loss, effective_number_weights, ldam_margins

COUNTS = [50, 20, 8, 3]


def _batch(seed=0, n=9, c=4):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64)
    labels = torch.randint(0, c, (n,), generator=g)
    return logits, labels


def _naive_ce_terms(logits, labels, shift=None, scale=1.0):
    """Per-sample -log softmax at the label, written out with exp and sums."""
    out = []
    for i in range(len(labels)):
        row = [scale * (logits[i, j] - (shift[i, j] if shift is not None else 0.0)) for j in range(logits.shape[1])]
        denom = sum(torch.exp(v) for v in row)
        out.append(-torch.log(torch.exp(row[labels[i]]) / denom))
    return out


def _check(loss_fn, naive_fn, logits, labels):
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    va, vb = loss_fn(a), naive_fn(b)
    ga, = torch.autograd.grad(va, a)
    gb, = torch.autograd.grad(vb, b)
    assert torch.allclose(va, vb, atol=1e-10) and torch.allclose(ga, gb, atol=1e-10)


def test_ldam_margins_hand_values_cifar10_lt():
    m = ldam_margins(long_tail_counts(10, 5000, 100))
    assert m[0].item() == pytest.approx(0.5 * 0.01**0.25, abs=1e-6)  # 0.158 for the 5,000-image class
    assert round(m[0].item(), 3) == 0.158 and m[-1].item() == pytest.approx(0.5)
    assert all(m[i] < m[i + 1] for i in range(9))


def test_effective_number_weights_hand_values():
    w = effective_number_weights([1, 3], beta=0.5)  # raw (1-b)/(1-b^n): 1 and 0.5/0.875
    raw = torch.tensor([1.0, 0.5 / 0.875])
    assert torch.allclose(w, raw / raw.sum() * 2)
    assert effective_number_weights(COUNTS).sum().item() == pytest.approx(4)


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
def test_focal_matches_naive(gamma):
    logits, labels = _batch(1)

    def naive(x):
        terms = []
        for t in _naive_ce_terms(x, labels):
            p = torch.exp(-t)
            terms.append((1 - p) ** gamma * t)
        return sum(terms) / len(terms)

    _check(lambda x: build_classifier_loss("focal", COUNTS, 10, focal_gamma=gamma)(x, labels), naive, logits, labels)


@pytest.mark.parametrize("name, gamma", [("cb_ce", 0.0), ("cb_focal", 1.0)])
def test_class_balanced_matches_naive(name, gamma):
    logits, labels = _batch(2)
    beta = 0.99
    raw = [(1 - beta) / (1 - beta**n) for n in COUNTS]
    w = [r / sum(raw) * len(raw) for r in raw]

    def naive(x):
        terms = _naive_ce_terms(x, labels)
        num = sum(w[labels[i]] * (1 - torch.exp(-t)) ** gamma * t for i, t in enumerate(terms))
        return num / sum(w[labels[i]] for i in range(len(labels)))

    loss = build_classifier_loss(name, COUNTS, 10, cb_beta=beta, focal_gamma=gamma)
    _check(lambda x: loss(x, labels), naive, logits, labels)


def test_ldam_and_drw_match_naive():
    cos, labels = _batch(3)
    cos = torch.tanh(cos)  # cosine logits live in [-1, 1]
    margins = [0.5 * (min(COUNTS) / n) ** 0.25 for n in COUNTS]
    shift = torch.zeros_like(cos)
    for i, y in enumerate(labels):
        shift[i, y] = margins[y]
    loss = build_classifier_loss("ldam_drw", COUNTS, 10, ldam_scale=30.0, drw_start=0.8, cb_beta=0.9999)
    assert loss.drw_epoch == 8

    def naive_plain(x):
        terms = _naive_ce_terms(x, labels, shift, 30.0)
        return sum(terms) / len(terms)

    raw = [(1 - 0.9999) / (1 - 0.9999**n) for n in COUNTS]
    w = [r / sum(raw) * len(raw) for r in raw]

    def naive_drw(x):
        terms = _naive_ce_terms(x, labels, shift, 30.0)
        return sum(w[labels[i]] * t for i, t in enumerate(terms)) / sum(w[y] for y in labels)

    _check(lambda x: loss(x, labels, epoch=7), naive_plain, cos, labels)  # before the DRW switch
    _check(lambda x: loss(x, labels, epoch=8), naive_drw, cos, labels)  # re-weighted from epoch 8
    plain_ldam = build_classifier_loss("ldam", COUNTS, 10)
    assert plain_ldam.drw_epoch == 10  # no re-weighting within the run
    _check(lambda x: plain_ldam(x, labels, epoch=9), naive_plain, cos, labels)


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0])
def test_logit_adjustment_matches_naive(tau):
    logits, labels = _batch(4)
    total = sum(COUNTS)
    prior = [math.log(n / total) for n in COUNTS]

    def naive(x):
        shift = -tau * torch.tensor(prior, dtype=x.dtype).expand_as(x)  # adds tau * log prior
        terms = _naive_ce_terms(x, labels, shift)
        return sum(terms) / len(terms)

    _check(lambda x: build_classifier_loss("logit_adjust", COUNTS, 10, la_tau=tau)(x, labels), naive, logits, labels)


def test_balanced_softmax_equals_logit_adjustment_tau_one_and_ce_at_tau_zero():
    logits, labels = _batch(5)
    bs = build_classifier_loss("balanced_softmax", COUNTS, 10)(logits, labels)
    la = build_classifier_loss("logit_adjust", COUNTS, 10, la_tau=1.0)(logits, labels)
    ce = build_classifier_loss("ce", COUNTS, 10)(logits, labels)
    la0 = build_classifier_loss("logit_adjust", COUNTS, 10, la_tau=0.0)(logits, labels)
    assert torch.allclose(bs, la) and torch.allclose(la0, ce) and not torch.allclose(bs, ce)


def _reference(name: str, logits, labels, epoch: int, p: dict):
    """Each classifier loss written out per sample from its paper's formula, with the config's fields ``p``."""
    c = logits.shape[1]
    n = torch.tensor(COUNTS, dtype=torch.float64)
    raw_w = (1 - p["cb_beta"]) / (1 - p["cb_beta"] ** n)
    cb_w = raw_w / raw_w.sum() * c
    prior = n / n.sum()
    margins = n ** -0.25 * (p["ldam_max_margin"] / (n ** -0.25).max())

    def nll(row, y):
        return -(row[y] - torch.logsumexp(row, 0))

    def weighted_mean(terms, w):
        return sum(w[y] * t for t, y in zip(terms, labels.tolist(), strict=True)) / sum(w[y] for y in labels.tolist())

    rows = [logits[i] for i in range(len(labels))]
    ys = labels.tolist()
    ce = [nll(r, y) for r, y in zip(rows, ys, strict=True)]
    focal = [(1 - torch.exp(-t)) ** p["focal_gamma"] * t for t in ce]
    ldam = [nll(p["ldam_scale"] * (r - margins * (torch.arange(c) == y)), y) for r, y in zip(rows, ys, strict=True)]
    drw = epoch >= int(p["drw_start"] * 10)
    return {
        "ce": sum(ce) / len(ce),
        "focal": sum(focal) / len(focal),
        "cb_ce": weighted_mean(ce, cb_w),
        "cb_focal": weighted_mean(focal, cb_w),
        "ldam": sum(ldam) / len(ldam),
        "ldam_drw": weighted_mean(ldam, cb_w) if drw else sum(ldam) / len(ldam),
        "logit_adjust": sum(nll(r + p["la_tau"] * torch.log(prior), y)
                            for r, y in zip(rows, ys, strict=True)) / len(ys),
        "balanced_softmax": sum(nll(r + torch.log(prior), y) for r, y in zip(rows, ys, strict=True)) / len(ys),
    }[name]


def test_every_classifier_loss_name_builds_its_own_loss_from_the_config_fields():
    """Given every ``loss.*`` field at once (as the run builder passes them), each name computes its own
    formula: a loss that silently took another's field (cb_ce taking focal_gamma, ldam taking drw_start)
    or another loss's class would miss its reference."""
    params = dict(focal_gamma=2.0, cb_beta=0.999, drw_start=0.5, ldam_max_margin=0.4, ldam_scale=16.0, la_tau=0.7,
                  temperature=0.1, prototypes_per_class=3)
    logits, labels = _batch(6)
    logits = torch.tanh(logits)  # cosine-like logits in [-1, 1] suit LDAM's scale
    values = {}
    for name in CLASSIFIER_LOSSES:
        got = build_classifier_loss(name, COUNTS, 10, **params)(logits, labels, 9)
        want = _reference(name, logits, labels, 9, params)
        assert torch.allclose(got, want, atol=1e-9), name
        values[name] = round(got.item(), 9)
    assert len(set(values.values())) == len(values), values  # no two names build the same loss


def test_cosine_classifier_outputs_cosines():
    layer = CosineLinear(5, 3)
    x = torch.randn(4, 5) * 10
    out = layer(x)
    expected = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(layer.weight, dim=1).T
    assert torch.allclose(out, expected) and out.abs().max() <= 1 + 1e-6
    net = create_hybrid_net("resnet8", 4, classifier="cosine")
    assert isinstance(net.classifier, CosineLinear)
    with pytest.raises(ValueError, match="model.classifier"):
        create_hybrid_net("resnet8", 4, classifier="mlp")
