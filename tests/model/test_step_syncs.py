"""The training step reads no device value on the host: no ``.item()``, ``bool(tensor)``,
``tolist``, data-dependent-shape ops (``nonzero``, boolean masks) or explicit synchronisation.

On CPU every such read goes through a few ATen ops (``_local_scalar_dense`` behind item/bool/int/
float, ``nonzero`` behind boolean indexing, ...): a dispatch mode counts them during a step, and the
Python-level readers are patched too. On CUDA, ``torch.cuda.set_sync_debug_mode("error")`` turns any
synchronising call into an error as well.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hybridlt.sweep.build import build_run

SYNC_OPS = {"_local_scalar_dense", "item", "is_nonzero", "equal", "nonzero", "masked_select", "_unique2",
            "unique_dim", "unique_consecutive", "repeat_interleave", "masked_scatter", "argwhere"}


class HostReads(TorchDispatchMode):
    """Records every op that needs a device value on the host (its ATen name)."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNC_OPS and not (name == "repeat_interleave" and (kwargs or {}).get("output_size") is not None):
            self.seen.append(name)
        elif name in ("index", "index_put", "index_put_") and any(  # a boolean mask: its size is read back
                isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1] or ()):
            self.seen.append(f"{name}[mask]")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_host_reads(monkeypatch):
    mode = HostReads()
    for name in ("tolist", "numpy", "item", "__bool__", "__int__", "__float__", "__index__"):
        real = getattr(torch.Tensor, name)

        def patched(self, *a, _real=real, _name=name, **k):
            mode.seen.append(_name)
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, patched)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: mode.seen.append("cuda.synchronize"))
    with mode:
        yield mode
    monkeypatch.undo()


def test_the_counter_sees_host_reads(monkeypatch):
    """The detector itself: each kind of host read is counted (else the step test could not fail)."""
    x = torch.arange(6.0)
    with count_host_reads(monkeypatch) as reads:
        x.sum().item()
        if x[0] > 1:
            pass
        x[x > 2].sum()
        x.tolist()
        torch.cuda.synchronize()
    assert "_local_scalar_dense" in reads.seen or "item" in reads.seen
    assert "__bool__" in reads.seen and "index[mask]" in reads.seen and "tolist" in reads.seen
    assert "cuda.synchronize" in reads.seen


DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("loss", ["sc", "psc", "mpsc"])
def test_a_training_step_reads_nothing_back(tiny_cfg, monkeypatch, device, loss):
    extra = ["loss.prototypes_per_class=2"] if loss == "mpsc" else []
    parts = build_run(tiny_cfg(f"train.device={device}", f"loss.contrastive={loss}", "augment.grayscale_p=0.5",
                               "augment.flip=true", *extra))
    trainer = parts.trainer
    trainer.objective.train()
    batches = trainer.streams.epoch(0)
    trainer.step(*next(batches), 0.5, 0)  # warm-up: lazy initialisation may read once
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        with count_host_reads(monkeypatch) as reads:
            for _ in range(2):  # fetching and augmenting the batch belongs to the step
                out = trainer.step(*next(batches), 0.5, 0)
    finally:
        if device == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    assert reads.seen == []
    assert torch.isfinite(out).all()
