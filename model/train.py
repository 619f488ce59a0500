"""The one training loop of the hybrid network. It knows nothing of Ray or of files.

``Trainer.fit(report)`` runs Eq. 1 over the two data streams epoch by epoch, evaluates the
classifier branch per class, and calls ``report(metrics, checkpoint)`` after every epoch on
every rank (``checkpoint`` is a state dict on checkpoint epochs, else ``None``). The caller
decides where metrics and checkpoints go: a run directory, Ray Train, a test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from hybridlt.model.curriculum import Curriculum

Report = Callable[[dict, dict | None], None]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the epoch and step (1-based)."""


def rng_state(device: torch.device) -> dict:
    """The generators a checkpoint carries: torch's CPU one, and the device's on CUDA."""
    state = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch_rng"].cpu())
    if "cuda_rng" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)


def epoch_metrics(epoch: int, means: list[float], frozen: bool, alpha: float, lr: float, steps: int,
                  seconds: float, images: int, streams) -> dict:
    """One epoch's training metrics (``means``: loss, contrastive loss, cross-entropy over its steps)."""
    return {
        "epoch": epoch + 1, "loss": means[0], "con_loss": None if frozen else means[1], "ce_loss": means[2],
        "alpha": alpha, "lr": lr, "steps": steps, "epoch_time_s": seconds,
        "images_per_s": images / seconds if seconds else 0.0,
        "data_wait_s": float(getattr(streams, "data_wait_s", 0.0)),
    }


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside DDP and/or ``torch.compile`` wrappers."""
    while hasattr(module, "module") or hasattr(module, "_orig_mod"):
        module = getattr(module, "module", None) or module._orig_mod
    return module


@dataclass
class Trainer:
    """Everything one run trains with. ``objective`` is a ``HybridObjective``, possibly wrapped.

    ``streams.epoch(e)`` yields ``(con_images [b, 2, C, H, W], con_labels, ce_images, ce_labels)``;
    ``evaluate(net) -> dict`` returns ``model.evaluate.accuracy_report``'s dict.
    """

    objective: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    streams: object
    curriculum: Curriculum
    evaluate: Callable[[nn.Module], dict]
    epochs: int
    device: torch.device
    amp: bool = True
    checkpoint_every: int = 1
    start_epoch: int = 0
    eval_every: int = 1
    milestones: frozenset[int] = frozenset()  # 1-based epochs that are always evaluated and checkpointed

    @property
    def core(self) -> nn.Module:
        return unwrap(self.objective)

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.amp and self.device.type == "cuda" else None

    def state_dict(self, epochs_done: int) -> dict:
        return {"model": self.core.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": epochs_done, **rng_state(self.device)}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint: the next epoch run is ``state['epoch']`` (0-based)."""
        self.core.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_rng(state, self.device)
        self.start_epoch = int(state["epoch"])

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the streams; loss sums stay on the device until the epoch ends."""
        alpha = self.curriculum(epoch)
        frozen = self.curriculum.freezes_backbone(epoch)
        self.objective.train()
        if frozen:
            self.core.net.backbone.eval()
        sums = torch.zeros(3, device=self.device, dtype=torch.float64)
        first_bad = torch.full((), -1, device=self.device, dtype=torch.long)
        steps, images = 0, 0
        start = time.perf_counter()
        for step, (cx, cy, ex, ey) in enumerate(self.streams.epoch(epoch)):
            parts = self.step(cx, cy, ex, ey, alpha, epoch, frozen)
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(parts[0]), step, first_bad)
            sums += parts
            steps += 1
            images += cx.shape[0] * cx.shape[1] + ex.shape[0]
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        bad = int(first_bad)
        if bad >= 0:
            raise NonFiniteLossError(f"loss is not finite at epoch {epoch + 1}, step {bad + 1} "
                                     f"(mean loss this epoch {sums[0].item() / max(steps, 1)})")
        means = (sums / max(steps, 1)).tolist()
        return epoch_metrics(epoch, means, frozen, alpha, self.scheduler.get_last_lr()[0], steps, seconds, images,
                             self.streams)

    def step(self, cx, cy, ex, ey, alpha: float, epoch: int, frozen: bool = False) -> torch.Tensor:
        """One optimiser step; returns ``(loss, con_loss, ce_loss)`` as a float64 tensor on the device.

        Nothing here reads a device value on the host (tests/model/test_step_syncs.py): the CPU
        queues the next step while the GPU runs this one."""
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss, con_loss, ce_loss = self.objective(cx, cy, ex, ey, alpha, epoch, frozen)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return torch.stack([loss.detach(), con_loss.detach(), ce_loss.detach()]).double()

    def evaluates(self, done: int) -> bool:
        """Whether epoch ``done`` (1-based) is evaluated: every ``eval_every``-th, each milestone
        (a scheduler's rung, which needs the metric there), and the last."""
        return done == self.epochs or done % self.eval_every == 0 or done in self.milestones

    def checkpoints(self, done: int) -> bool:
        """Whether epoch ``done`` (1-based) is checkpointed: every ``checkpoint_every``-th, each
        milestone (a trial stopped at a rung keeps its state there), and the last."""
        return done == self.epochs or done % self.checkpoint_every == 0 or done in self.milestones

    def evaluate_into(self, metrics: dict, done: int) -> None:
        """Add the evaluation of ``self.core.net`` to epoch ``done``'s ``metrics`` when that epoch is
        evaluated, and ``eval_time_s`` (0 when it is not)."""
        metrics["eval_time_s"] = 0.0
        if self.evaluates(done):
            start = time.perf_counter()
            net = self.core.net
            net.eval()
            metrics.update(self.evaluate(net))
            metrics["eval_time_s"] = time.perf_counter() - start

    def fit(self, report: Report) -> dict:
        """Train from ``start_epoch`` to ``epochs``; returns the last epoch's metrics.

        An epoch that is not evaluated reports its training metrics only (no accuracy keys) and
        ``eval_time_s`` 0."""
        metrics: dict = {}
        for epoch in range(self.start_epoch, self.epochs):
            done = epoch + 1
            metrics = self.train_epoch(epoch)
            self.evaluate_into(metrics, done)
            report(metrics, self.state_dict(done) if self.checkpoints(done) else None)
        return metrics
