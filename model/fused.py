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
import time

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from hybridlt.model.train import NonFiniteLossError, Report, Trainer, epoch_metrics, restore_rng, rng_state


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

    def forward(self, con_images, con_labels, ce_images, ce_labels, alpha: torch.Tensor, epoch: int = 0,
                frozen: bool = False):
        template = self.template[0]
        template.train(self.training)
        if frozen:  # as Trainer.train_epoch: the frozen backbone's BatchNorm uses its running statistics
            template.net.backbone.eval()

        def one(params, buffers, cx, cy, ex, ey, a):
            return functional_call(template, (params, buffers), (cx, cy, ex, ey, a, epoch, frozen))

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


class FusedTrainer:
    """The K ``Trainer``s of trials that differ only in their seed, stepped as one ``FusedObjectives``.

    Each member keeps what is its own: its streams (its sampler order and augmentation draws), its
    curriculum's alpha, its evaluation; ``optimizer`` and ``scheduler`` are the fused ones
    (``fused_optimizer`` and the members' schedule). ``fit(reports)`` calls ``reports[i](metrics,
    checkpoint)`` for member ``i`` after every epoch, with metrics and checkpoints in the form a
    separate ``Trainer`` gives them, so a fused run's files are K ordinary runs: each can be read,
    compared and resumed on its own. ``epoch_time_s`` is the fused epoch's wall time, shared by the K.
    """

    def __init__(self, fused: FusedObjectives, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, trainers: list[Trainer]):
        if len(trainers) != fused.k:
            raise ValueError(f"FusedTrainer: {len(trainers)} trainers for {fused.k} fused trials")
        self.fused, self.optimizer, self.scheduler, self.trainers = fused, optimizer, scheduler, trainers
        self.lead = trainers[0]
        self.device = self.lead.device
        self.start_epoch = self.lead.start_epoch

    def member_state(self, i: int, epochs_done: int) -> dict:
        """Member ``i``'s checkpoint, as ``Trainer.state_dict`` of a separate run writes it."""
        full = self.optimizer.state_dict()
        optimizer = {"param_groups": copy.deepcopy(full["param_groups"]),
                     "state": {k: {n: v[i].clone() if torch.is_tensor(v) and v.dim() else v for n, v in st.items()}
                               for k, st in full["state"].items()}}
        return {"model": {n: v.clone() for n, v in self.fused.trial_state(i).items()}, "optimizer": optimizer,
                "scheduler": self.scheduler.state_dict(), "epoch": epochs_done, **rng_state(self.device)}

    def load_member_states(self, states: list[dict]) -> None:
        """Continue from one checkpoint per member, all of the same epoch (separate or fused runs' alike)."""
        epochs = {int(s["epoch"]) for s in states}
        if len(epochs) != 1:
            raise ValueError(f"fused members continue from one epoch; their checkpoints are of epochs {sorted(epochs)}")
        with torch.no_grad():
            for n, p in self.fused.params().items():
                p.copy_(torch.stack([s["model"][n] for s in states]).to(p))
            for n, b in self.fused.buffers_dict().items():
                b.copy_(torch.stack([s["model"][n] for s in states]).to(b))
        first = states[0]["optimizer"]
        stacked = {k: {n: torch.stack([s["optimizer"]["state"][k][n] for s in states]) if torch.is_tensor(v) else v
                       for n, v in st.items()} for k, st in first["state"].items()}
        self.optimizer.load_state_dict({"param_groups": first["param_groups"], "state": stacked})
        self.scheduler.load_state_dict(states[0]["scheduler"])
        restore_rng(states[0], self.device)
        self.start_epoch = epochs.pop()

    def train_epoch(self, epoch: int) -> list[dict]:
        """One pass over the K members' streams in lockstep; loss sums stay on the device."""
        k, device = self.fused.k, self.device
        alphas = [t.curriculum(epoch) for t in self.trainers]
        frozen = self.lead.curriculum.freezes_backbone(epoch)
        alpha = torch.tensor(alphas, dtype=torch.float32).to(device, non_blocking=True)
        amp_dtype = self.lead.amp_dtype
        self.fused.train()
        sums = torch.zeros(k, 3, device=device, dtype=torch.float64)
        first_bad = torch.full((k,), -1, device=device, dtype=torch.long)
        steps, images = 0, 0
        start = time.perf_counter()
        for step, batches in enumerate(zip(*(t.streams.epoch(epoch) for t in self.trainers), strict=True)):
            cx, cy, ex, ey = (torch.stack(part) for part in zip(*batches, strict=True))
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss, con_loss, ce_loss = self.fused(cx, cy, ex, ey, alpha, epoch, frozen)
            self.optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()  # each member's gradient lands in its own slice
            self.optimizer.step()
            self.scheduler.step()
            parts = torch.stack([loss.detach(), con_loss.detach(), ce_loss.detach()], 1).double()
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(parts[:, 0]), step, first_bad)
            sums += parts
            steps += 1
            images += cx.shape[1] * cx.shape[2] + ex.shape[1]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        bad = first_bad.tolist()
        for i, b in enumerate(bad):
            if b >= 0:
                raise NonFiniteLossError(f"loss is not finite at epoch {epoch + 1}, step {b + 1} "
                                         f"of fused trial {i + 1}")
        means = (sums / max(steps, 1)).tolist()
        lr = self.scheduler.get_last_lr()[0]
        return [epoch_metrics(epoch, m, frozen, a, lr, steps, seconds, images, t.streams)
                for m, a, t in zip(means, alphas, self.trainers, strict=True)]

    def fit(self, reports: list[Report]) -> list[dict]:
        """Train from ``start_epoch`` to the members' ``epochs``; returns each member's last metrics."""
        lead, results = self.lead, [{} for _ in self.trainers]
        for epoch in range(self.start_epoch, lead.epochs):
            done = epoch + 1
            results = self.train_epoch(epoch)
            for i, (metrics, trainer) in enumerate(zip(results, self.trainers, strict=True)):
                if lead.evaluates(done):  # the member's weights into its own (unfused) module first
                    trainer.core.load_state_dict(self.fused.trial_state(i))
                trainer.evaluate_into(metrics, done)
            for i, (metrics, report) in enumerate(zip(results, reports, strict=True)):
                report(metrics, self.member_state(i, done) if lead.checkpoints(done) else None)
        return results
