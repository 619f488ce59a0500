"""Fused small trials (off by default): K same-structure hybrid objectives trained as one model.

``FusedObjectives(objectives)`` stacks the K objectives' parameters and buffers along a new first
dimension (``torch.func.stack_module_state``) and runs Eq. 1 for all of them with one ``vmap``ed
``functional_call``: one kernel launch per layer for K trials, which pays off where each trial is
too small to fill a GPU. Inputs carry the trial dimension first (``[K, B, ...]``), ``alpha`` is a
``[K]`` tensor (per-trial curricula), and the result is ``(loss, con_loss, ce_loss)``, each ``[K]``.

The trials must share everything that is not a tensor: structure, loss settings (temperature,
prototypes), optimiser settings; what may differ is the initialisation (seed), the data each trial
sees and alpha. BatchNorm statistics are per trial (the buffers are stacked too). ``.sum()`` of the
K losses back-propagates each trial's own gradient into its own slice, so SGD on the stacked
parameters is K independent SGDs.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


class FusedObjectives(nn.Module):
    def __init__(self, objectives: list[nn.Module]):
        super().__init__()
        if not objectives:
            raise ValueError("FusedObjectives needs at least one objective")
        shapes = [[(n, p.shape) for n, p in o.named_parameters()] for o in objectives]
        if any(s != shapes[0] for s in shapes[1:]):
            raise ValueError("fused trials must have the same structure (parameter names and shapes)")
        self.k = len(objectives)
        params, buffers = stack_module_state(objectives)
        self.names = list(params)
        self.stacked = nn.ParameterDict({n.replace(".", "/"): nn.Parameter(p.detach().clone())
                                         for n, p in params.items()})
        for n, b in buffers.items():
            self.register_buffer("buf/" + n.replace(".", "|"), b.clone())
        self.buffer_names = list(buffers)
        self.template = [copy.deepcopy(objectives[0]).to("meta")]  # a list: not a submodule

    def params(self) -> dict[str, torch.Tensor]:
        return {n: self.stacked[n.replace(".", "/")] for n in self.names}

    def buffers_dict(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, "buf/" + n.replace(".", "|")) for n in self.buffer_names}

    def forward(self, con_images, con_labels, ce_images, ce_labels, alpha: torch.Tensor, epoch: int = 0):
        template = self.template[0]
        template.train(self.training)

        def one(params, buffers, cx, cy, ex, ey, a):
            return functional_call(template, (params, buffers), (cx, cy, ex, ey, a, epoch))

        return vmap(one, randomness="different")(self.params(), self.buffers_dict(), con_images, con_labels,
                                                 ce_images, ce_labels, alpha)

    def trial_state(self, i: int) -> dict[str, torch.Tensor]:
        """Trial ``i``'s state dict (as one of the original objectives would have it)."""
        return {**{n: p[i].detach() for n, p in self.params().items()},
                **{n: b[i] for n, b in self.buffers_dict().items()}}


def fused_optimizer(fused: FusedObjectives, lr: float, momentum: float = 0.9, weight_decay: float = 1e-4,
                    nesterov: bool = False) -> torch.optim.SGD:
    """``model.optim.build_optimizer``'s SGD over the stacked parameters (prototypes: no decay)."""
    decay = [p for n, p in fused.params().items() if not n.endswith("prototypes")]
    no_decay = [p for n, p in fused.params().items() if n.endswith("prototypes")]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    on_cuda = decay[0].is_cuda
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov,
                           fused=True if on_cuda else None, foreach=None if on_cuda else True)
