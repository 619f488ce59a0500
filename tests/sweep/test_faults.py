"""Faults injected into real local Ray runs through the CLI: a killed DDP worker, a killed trial process, a
corrupt checkpoint. (A killed driver: tests/sweep/test_kill_matrix.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")

from hybridlt.sweep.results import read_dataset  # noqa: E402
from tests.conftest import TINY  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "hybridlt.cli"]


def _env(**extra):
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def _spec(tmp_path, trials=6):
    doc = {
        "name": "crash", "storage": str(tmp_path / "sweeps"), "base": str(ROOT / "configs" / "quickstart.yaml"),
        "overrides": [*TINY, "train.epochs=4"],
        "space": {"loss.contrastive": {"choice": ["sc", "psc"]}, "loss.temperature": {"loguniform": [0.05, 1.0]}},
        "scheduler": {"kind": "none"}, "trials": trials, "concurrency": 2,
    }
    path = tmp_path / "crash.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_killed_ddp_worker_restarts_from_checkpoint(tmp_path):
    marker = tmp_path / "killed.txt"
    sets = [a for s in [*TINY, "train.epochs=3"] for a in ("--set", s)]
    done = subprocess.run([*CLI, "train", "--config", str(ROOT / "configs" / "quickstart.yaml"), *sets,
                           "--workers", "2", "--out", str(tmp_path / "run"), "--quiet"], cwd=tmp_path,
                          env=_env(HYBRIDLT_FAULT_KILL=f"2:1:{marker}"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert marker.read_text().startswith("killed rank 1 at epoch 2")
    epochs = read_dataset(tmp_path / "run", "epochs").to_pandas()
    assert sorted(epochs.epoch) == [1, 2, 3]  # each epoch once: epoch 2 re-run after the restart replaced itself
    assert "test accuracy" in done.stdout


def test_corrupt_ray_checkpoint_falls_back_to_the_previous_one(tmp_path):
    sets = [a for s in [*TINY, "train.epochs=2"] for a in ("--set", s)]
    run = [*CLI, "train", "--config", str(ROOT / "configs" / "quickstart.yaml"), *sets, "--workers", "1",
           "--out", str(tmp_path / "run"), "--quiet"]
    first = subprocess.run(run, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    ckpts = sorted((tmp_path / "run" / "ray" / "train").glob("checkpoint_*/checkpoint.pt"))
    assert len(ckpts) == 2
    newest = ckpts[-1]
    newest.write_bytes(newest.read_bytes()[:200])  # truncated
    resumed = subprocess.run([*CLI, "train", "--out", str(tmp_path / "run"), "--resume", "--workers", "1",
                              "--quiet"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    logs = resumed.stdout + resumed.stderr
    assert str(newest) in logs and "falling back to an earlier checkpoint" in logs
    epochs = read_dataset(tmp_path / "run", "epochs").to_pandas()
    assert sorted(epochs.epoch) == [1, 2]  # epoch 2 re-run from epoch 1's checkpoint, its row replaced once


@pytest.mark.parametrize("use_train", [False, True], ids=["tune-path", "train-path"])
def test_a_killed_trial_process_is_retried_from_its_checkpoint(tmp_path, use_train):
    spec = _spec(tmp_path, trials=2)
    doc = yaml.safe_load(spec.read_text())
    doc["overrides"] = [*TINY, "train.epochs=4"]
    doc["resources"] = {"use_train": use_train, "max_failures": 1}
    spec.write_text(yaml.safe_dump(doc))
    marker = tmp_path / "killed.txt"
    done = subprocess.run([*CLI, "sweep", str(spec), "--num-cpus", "2"], cwd=tmp_path,
                          env=_env(HYBRIDLT_FAULT_KILL=f"3:0:{marker}"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert marker.read_text().startswith("killed rank 0 at epoch 3")  # one trial's process died at epoch 3
    root = tmp_path / "sweeps" / "crash" / "results"
    trials = read_dataset(root, "trials").to_pandas()
    assert len(trials) == 2 and (trials.status == "completed").all() and (trials.epochs_done == 4).all()
    epochs = read_dataset(root, "epochs").to_pandas()
    assert not epochs.duplicated(["trial_id", "epoch"]).any() and len(epochs) == 8
    killed_at, killed = marker.stat().st_mtime, marker.read_text().split()[-1]
    assert killed in set(trials.trial_id)
    # the retried trial went on from a checkpoint (epoch 2's, or epoch 1's when Ray had not registered the
    # newer one yet): its epoch 1 predates the kill, its epochs 3 and 4 come after it (a restart from
    # scratch would have rewritten epoch 1 after the kill)
    mtime = {e: (root / "epochs" / f"{killed}-epoch-{e:04d}.parquet").stat().st_mtime for e in (1, 2, 3, 4)}
    assert mtime[1] < killed_at < mtime[3] <= mtime[4]
