"""Fused trials (model/fused.py) equal separate trials: same losses and parameters, step by step."""

from __future__ import annotations

import pytest
import torch

from hybridlt.model.fused import FusedObjectives, fused_optimizer
from hybridlt.model.hybrid import HybridObjective, create_hybrid_net
from hybridlt.model.losses import build_classifier_loss, build_contrastive_loss
from hybridlt.model.optim import build_optimizer


def objective(seed: int, contrastive: str) -> HybridObjective:
    torch.manual_seed(seed)
    net = create_hybrid_net("resnet8", 5, 1, proj_dim=16)
    return HybridObjective(net, build_contrastive_loss(contrastive, 5, 16, temperature=0.2, prototypes_per_class=2),
                           build_classifier_loss("ce", [10, 8, 6, 4, 2], 3))


@pytest.mark.parametrize("contrastive", ["sc", "mpsc"])
def test_fused_trials_equal_separate_trials(contrastive):
    k, b = 3, 12
    separate = [objective(s, contrastive) for s in range(k)]
    fused = FusedObjectives([objective(s, contrastive) for s in range(k)])
    opts = [build_optimizer(o, 0.05, 0.9, 5e-4) for o in separate]
    fopt = fused_optimizer(fused, 0.05, 0.9, 5e-4)
    gen = torch.Generator().manual_seed(0)
    alphas = torch.tensor([0.2, 0.5, 0.9])
    for _ in range(3):
        cx = torch.randn(k, b, 2, 1, 8, 8, generator=gen)  # each trial its own data
        cy = torch.randint(0, 5, (k, b), generator=gen)
        ex = torch.randn(k, b, 1, 8, 8, generator=gen)
        ey = torch.randint(0, 5, (k, b), generator=gen)
        expected = []
        for i, (o, opt) in enumerate(zip(separate, opts, strict=True)):
            loss, con, ce = o(cx[i], cy[i], ex[i], ey[i], float(alphas[i]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            expected.append(torch.stack([loss, con, ce]).detach())
        loss, con, ce = fused(cx, cy, ex, ey, alphas)
        fopt.zero_grad()
        loss.sum().backward()
        fopt.step()
        torch.testing.assert_close(torch.stack([loss, con, ce], 1).detach(), torch.stack(expected),
                                   rtol=1e-4, atol=1e-5)
    for i, o in enumerate(separate):  # parameters and BatchNorm statistics, trial by trial
        state = fused.trial_state(i)
        for name, value in o.state_dict().items():
            torch.testing.assert_close(state[name].to(value.dtype), value, rtol=1e-4, atol=1e-5, msg=name)


def test_different_structures_are_refused():
    with pytest.raises(ValueError, match="same structure"):
        FusedObjectives([objective(0, "sc"), objective(0, "mpsc")])
