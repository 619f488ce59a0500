"""A store that fills up mid-sweep (a small tmpfs): one ``error: storage:`` line naming the path and
what is free, exit 2, the store still readable; after space is freed ``--resume`` completes."""

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


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a few MiB (mount needs root, which CI and this machine's tests run as)."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs and needs root (CI runs as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_store_stops_with_one_line_and_resume_completes_after_space_is_freed(tmp_path, small_disk):
    filler = small_disk / "filler.bin"
    spec = {"name": "full", "storage": str(small_disk / "sweeps"), "base": str(ROOT / "configs" / "quickstart.yaml"),
            "overrides": [*TINY, "train.epochs=3"], "space": {"loss.temperature": {"loguniform": [0.05, 1.0]}},
            "scheduler": {"kind": "none"}, "trials": 3, "concurrency": 2,
            "search": {"storage": f"sqlite:///{tmp_path / 'optuna.db'}"}}
    path = tmp_path / "full.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # leave ~1.5 MiB: enough to start, not enough for three trials' checkpoints and rows
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler.write_bytes(b"\0" * (free - 1536 * 1024))
    first = subprocess.run([*CLI, "sweep", str(path), "--num-cpus", "2"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 2, first.stderr[-3000:]
    errors = [line for line in first.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: storage: cannot write "), first.stderr[-3000:]
    assert str(small_disk) in errors[0] and "MiB free" in errors[0] and "--resume" in errors[0]
    assert "Traceback" not in first.stderr
    root = small_disk / "sweeps" / "full" / "results"
    read_dataset(root, "epochs")  # still readable: no torn file
    read_dataset(root, "trials")

    filler.unlink()  # space freed
    resumed = subprocess.run([*CLI, "sweep", str(path), "--num-cpus", "2", "--resume"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = read_dataset(root, "trials").to_pandas()
    assert len(trials) == 3 and trials.trial_id.is_unique and (trials.status == "completed").all()
    epochs = read_dataset(root, "epochs").to_pandas()
    assert len(epochs) == 9 and not epochs.duplicated(["trial_id", "epoch"]).any()
