"""Per-trial isolation in a reused trial process: trials A, B, then A again in one process give A's
numbers bit for bit, the previous trial's model is released, threads follow the trial's CPUs.

The trial body is called the way a reused Tune actor calls it: ``worker_loop`` once per trial in
the same process, each time in a new thread, with Tune's ``report``/``get_checkpoint`` stubbed.
"""

from __future__ import annotations

import random
import threading
import weakref

import numpy as np
import pytest
import torch

from hybridlt.data import augment
from hybridlt.sweep import trial as trial_mod
from hybridlt.sweep.isolation import reset_trial_process, trial_threads

ray_tune = pytest.importorskip("ray.tune")


def test_reset_gives_a_fresh_process_state():
    """After a trial dirtied the RNGs, threads and caches, the reset state equals a freshly seeded one."""
    random.seed(11)
    np.random.seed(11)
    torch.manual_seed(11)
    expected = (random.random(), np.random.rand(), torch.rand(3))
    # what a previous trial leaves behind
    random.random(), np.random.rand(5), torch.randn(7)
    torch.set_num_threads(2)
    augment.BatchAugment([0.5], [0.2]).normalize(torch.zeros(1, 1, 2, 2))
    assert augment._CONSTANTS

    reset_trial_process(11, cpus=1)
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(3), expected[2])
    assert torch.get_num_threads() == 1
    assert not augment._CONSTANTS
    assert [trial_threads(c) for c in (0.5, 1, 1.5, 2, 4)] == [1, 1, 1, 2, 4]


def test_reset_freezes_survivors_and_still_collects_a_trials_cycles():
    """The reset freezes what survives it (later collections skip it), and a reference cycle that a
    trial made after that freeze is still collected by the next trial's reset."""
    import gc

    class Node:
        pass

    reset_trial_process(0, cpus=1)
    survivor = Node()
    survivor.me = survivor  # alive at the next reset: frozen there
    frozen_before = gc.get_freeze_count()
    garbage = Node()
    garbage.me = garbage  # a trial's cyclic garbage: reference counting alone never frees it
    dead = weakref.ref(garbage)
    del garbage
    assert dead() is not None
    reset_trial_process(0, cpus=1)
    assert dead() is None
    assert gc.get_freeze_count() > frozen_before
    assert not any(o is survivor for o in gc.get_objects())  # frozen objects are not tracked any more
    gc.unfreeze()  # the rest of this test process collects as usual


def _run_trial(monkeypatch, cfg, cpus, refs, root):
    """One trial as a reused Tune actor runs it (a fresh thread); returns what it reported."""
    reported = []

    def report(metrics, checkpoint=None):
        reported.append((dict(metrics), torch.get_num_threads(), checkpoint is not None))

    monkeypatch.setattr(ray_tune, "report", report)
    monkeypatch.setattr(ray_tune, "get_checkpoint", lambda: None)
    real_build = trial_mod.build_run

    def build_run(*args, **kwargs):
        parts = real_build(*args, **kwargs)
        refs.append(weakref.ref(parts.trainer.objective))
        return parts

    monkeypatch.setattr(trial_mod, "build_run", build_run)
    config = {"cfg": cfg.model_dump(mode="json"), "trial_id": "t", "results_root": str(root),
              "cpus": cpus, "milestones": [], "api": "tune"}
    errors = []

    def body():
        try:
            trial_mod.worker_loop(config)
        except BaseException as exc:  # noqa: BLE001 (re-raised in the test thread)
            errors.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return reported


def test_trials_a_b_a_in_one_process_give_a_bit_identical(tmp_path, tiny_cfg, monkeypatch):
    a = tiny_cfg("seed=0", "loss.contrastive=sc", "loss.temperature=0.1", "augment.grayscale_p=0.5")
    b = tiny_cfg("seed=3", "loss.contrastive=mpsc", "loss.prototypes_per_class=2", "loss.temperature=0.5",
                 "train.epochs=1")
    refs: list = []
    first = _run_trial(monkeypatch, a, 1, refs, tmp_path / 'results')
    # trial B holds 2 CPUs and leaves its own RNG draws, threads and caches in the process
    other = _run_trial(monkeypatch, b, 2, refs, tmp_path / 'results')
    random.random(), np.random.rand(3), torch.rand(5)
    again = _run_trial(monkeypatch, a, 1, refs, tmp_path / 'results')

    assert [threads for _, threads, _ in first] == [1, 1] and [t for _, t, _ in other] == [2]
    keys = ("loss", "con_loss", "ce_loss", "acc", "balanced_acc", "many_acc", "few_acc", "lr", "alpha")
    assert [{k: m[k] for k in keys} for m, _, _ in again] == [{k: m[k] for k in keys} for m, _, _ in first]
    assert first[0][0]["loss"] != other[0][0]["loss"]  # B really was another trial
    # the first two trials' models were released by the reset at the start of the next trial
    assert refs[0]() is None and refs[1]() is None


def test_eval_every_and_milestones(tmp_path, tiny_cfg, monkeypatch):
    """eval_every 3 over 5 epochs with a rung at 2: evaluated at 2 (rung), 3, 5 (last); checkpoints at
    the rung and the last; the other epochs report NaN accuracies to Tune and no per-class rows."""
    cfg = tiny_cfg("train.epochs=5", "train.eval_every=3", "train.checkpoint_every=10")
    reported = []

    def report(metrics, checkpoint=None):
        reported.append((metrics, checkpoint is not None))

    monkeypatch.setattr(ray_tune, "report", report)
    monkeypatch.setattr(ray_tune, "get_checkpoint", lambda: None)
    trial_mod.worker_loop({"cfg": cfg.model_dump(mode="json"), "trial_id": "e", "results_root": str(tmp_path / "r"),
                           "cpus": 1, "milestones": [2], "api": "tune"})
    evaluated = [m["epoch"] for m, _ in reported if m["acc"] == m["acc"]]
    assert evaluated == [2, 3, 5]
    assert [m["epoch"] for m, ckpt in reported if ckpt] == [2, 5]
    assert [m["eval_time_s"] > 0 for m, _ in reported] == [False, True, True, False, True]
    from hybridlt.sweep.results import read_dataset

    per_class = read_dataset(tmp_path / "r", "per_class").to_pylist()
    assert sorted({r["epoch"] for r in per_class}) == [2, 3, 5]
    epochs = sorted(read_dataset(tmp_path / "r", "epochs").to_pylist(), key=lambda r: r["epoch"])
    assert [r["acc"] is None for r in epochs] == [True, False, False, True, False]
