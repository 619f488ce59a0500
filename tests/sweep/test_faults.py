"""Faults injected into real local Ray runs through the CLI: a killed driver, a killed DDP worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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


def _trial_files(root: Path) -> dict[str, float]:
    folder = root / "trials"
    return {p.stem: p.stat().st_mtime for p in folder.glob("*.parquet")} if folder.is_dir() else {}


def test_killed_driver_then_resume_loses_and_repeats_nothing(tmp_path):
    spec = _spec(tmp_path)
    root = tmp_path / "sweeps" / "crash" / "results"
    proc = subprocess.Popen([*CLI, "sweep", str(spec), "--num-cpus", "2"], cwd=tmp_path, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while len(_trial_files(root)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    proc.wait()
    before = _trial_files(root)
    assert 2 <= len(before) < 6
    epochs_before = {p.name: p.stat().st_mtime for p in (root / "epochs").glob("*.parquet")}

    done = subprocess.run([*CLI, "sweep", str(spec), "--resume", "--num-cpus", "2"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    trials = read_dataset(root, "trials").to_pandas()
    assert len(trials) == 6 and trials.trial_id.is_unique  # every trial present exactly once
    after = _trial_files(root)
    for trial_id, mtime in before.items():  # no completed trial re-run or rewritten
        assert after[trial_id] == mtime
    for name, mtime in epochs_before.items():
        if name.split("-epoch-")[0] in before:
            assert (root / "epochs" / name).stat().st_mtime == mtime
    epochs = read_dataset(root, "epochs").to_pandas()
    finished = epochs[epochs.trial_id.isin(trials.trial_id)]
    assert not finished.duplicated(["trial_id", "epoch"]).any()
    assert (trials.status == "completed").all() and (trials.epochs_done == 4).all()


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
