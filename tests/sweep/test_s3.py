"""A sweep stored on ``s3://`` end to end, against a real S3-protocol server on loopback (moto's
server mode, started here): the results store and Ray Tune's storage in the bucket, the driver
killed mid-sweep and ``--resume``d, ``export-best`` and the dashboard's query layer reading
``s3://``, the Optuna study in its local SQLite file. Credentials come from the standard AWS
variables (dummies); pyarrow finds the server through ``AWS_ENDPOINT_URL``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")
moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

from hybridlt.sweep.results import read_dataset  # noqa: E402
from hybridlt.sweep.store import Location  # noqa: E402
from tests.conftest import TINY  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "hybridlt.cli"]
BUCKET = "hybridlt-test"
TRIALS = 5


@pytest.fixture
def s3(monkeypatch, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true", "HYBRIDLT_OPTUNA_DIR": str(tmp_path / "optuna")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    try:
        yield env
    finally:
        server.stop()


def _keys(prefix: str) -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _trial_keys() -> list[str]:
    return [k for k in _keys("sweeps/s3qs/results/trials/") if k.endswith(".parquet")]


def test_sweep_on_s3_survives_a_killed_driver(s3, tmp_path):
    import optuna

    doc = {
        "name": "s3qs", "storage": f"s3://{BUCKET}/sweeps", "base": str(ROOT / "configs" / "quickstart.yaml"),
        "overrides": [*TINY, "train.epochs=3"],
        "space": {"loss.contrastive": {"choice": ["sc", "psc"]}, "loss.temperature": {"loguniform": [0.05, 1.0]}},
        "scheduler": {"kind": "none"}, "trials": TRIALS, "concurrency": 2,
    }
    spec_path = tmp_path / "s3qs.yaml"
    spec_path.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([*CLI, "sweep", str(spec_path), "--num-cpus", "2"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 400
    while len(_trial_keys()) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    proc.wait()
    before = set(_trial_keys())
    assert 1 <= len(before) < TRIALS
    assert any(k.endswith("tuner.pkl") for k in _keys("sweeps/s3qs/")), "Ray Tune's state is in the bucket"

    done = subprocess.run([*CLI, "sweep", str(spec_path), "--resume", "--num-cpus", "2"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = f"s3://{BUCKET}/sweeps/s3qs/results"
    trials = read_dataset(results, "trials").to_pandas()
    assert len(trials) == TRIALS and trials.trial_id.is_unique
    assert (trials.status == "completed").all() and (trials.epochs_done == 3).all()
    assert before <= set(_trial_keys())
    epochs = read_dataset(results, "epochs").to_pandas()
    assert not epochs.duplicated(["trial_id", "epoch"]).any() and len(epochs) == 3 * TRIALS
    assert any("/train/" in k or "checkpoint_" in k for k in _keys("sweeps/s3qs/")), "checkpoints in the bucket"

    # the study went to the local SQLite file named for object-store sweeps, and lost no trial
    (db,) = (tmp_path / "optuna").glob("s3qs-*.db")
    study = optuna.load_study(study_name="s3qs", storage=f"sqlite:///{db}")
    told = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.user_attrs["ray_trial_id"] for t in told) == sorted(trials.trial_id)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]

    out = tmp_path / "best.yaml"
    exported = subprocess.run([*CLI, "export-best", results, "-o", str(out)], env=env, capture_output=True,
                              text=True, timeout=120)
    assert exported.returncode == 0, exported.stderr[-2000:]
    best = trials[trials.final_acc == trials.final_acc.max()].sort_values("trial_id").iloc[0]
    assert out.read_text().startswith(f"# trial {best.trial_id} of s3://{BUCKET}/sweeps/s3qs/results")

    from hybridlt.dashboards.queries import ResultsCache

    cache = ResultsCache(results)
    assert cache.refresh()
    assert isinstance(cache.root, Location) and not cache.root.is_local
    shown = cache.trials().set_index("trial_id")
    assert sorted(shown.index) == sorted(trials.trial_id)
    assert (shown.loc[trials.trial_id, "final_acc"].to_numpy() == trials.final_acc.to_numpy()).all()
    per_class = cache.last_per_class()
    assert set(per_class) == set(trials.trial_id) and all(t.num_rows == 10 for t in per_class.values())
