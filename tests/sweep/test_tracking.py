"""Trackers on a real sweep: a real ``mlflow server`` (SQLite backend, started here on 127.0.0.1)
receives one run per trial with its parameters, per-epoch metrics and the per-class table;
Tune's TensorBoard event files land in the trial folders; W&B writes offline runs."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")
pytest.importorskip("tensorboardX")
pytest.importorskip("wandb")

from hybridlt.sweep.results import read_dataset  # noqa: E402
from hybridlt.sweep.spec import load_sweep_spec  # noqa: E402
from hybridlt.sweep.tuner import run_sweep, start_ray  # noqa: E402
from tests.conftest import TINY  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    exe = str(Path(sys.executable).parent / "mlflow")
    log = (tmp_path / "mlflow.log").open("w")
    proc = subprocess.Popen([exe, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                             "--artifacts-destination", str(tmp_path / "mlartifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240  # the server's imports alone take a while on a loaded machine
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail(f"mlflow server did not start: {(tmp_path / 'mlflow.log').read_text()[-2000:]}")
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn worker: only what we started
        proc.wait(timeout=60)
        log.close()


def tb_scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of a TensorBoard event file (TFRecord framing, tensorboardX's Event proto)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    data = path.read_bytes()
    i = 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
        i += 12 + n + 4
        for v in event.summary.value:
            out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_mlflow_tensorboard_and_wandb_receive_the_sweep(tmp_path, mlflow_server):
    doc = {
        "name": "trk", "storage": str(tmp_path / "sweeps"), "base": str(ROOT / "configs" / "quickstart.yaml"),
        "overrides": [*TINY, "train.epochs=2"],
        "space": {"loss.contrastive": {"choice": ["sc", "psc"]}, "loss.temperature": {"loguniform": [0.05, 1.0]}},
        "scheduler": {"kind": "none"}, "trials": 2, "concurrency": 2,
        "tracking": {"mlflow": mlflow_server, "tensorboard": True, "wandb": "offline"},
    }
    path = tmp_path / "trk.yaml"
    path.write_text(yaml.safe_dump(doc))
    spec, base = load_sweep_spec(path)
    start_ray(None, trial_slots=2, num_cpus=2)
    try:
        run_sweep(spec, base)
    finally:
        ray.shutdown()
        os.environ.pop("WANDB_MODE", None)
    exp_dir = tmp_path / "sweeps" / "trk"
    root = exp_dir / "results"
    trials = read_dataset(root, "trials").to_pandas().set_index("trial_id")
    epochs = read_dataset(root, "epochs").to_pandas()
    per_class = read_dataset(root, "per_class").to_pandas()
    assert len(trials) == 2

    client = mlflow.MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("trk")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    for run in runs:
        (trial_id,) = [t for t in trials.index if t in run.info.run_name]
        assert run.info.status == "FINISHED"
        assert run.data.params["loss.contrastive"] == trials.loc[trial_id, "param.loss.contrastive"]
        assert math.isclose(float(run.data.params["loss.temperature"]), trials.loc[trial_id, "param.loss.temperature"])
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "acc"))
        mine = epochs[epochs.trial_id == trial_id].sort_values("epoch")
        assert history == list(zip(mine.epoch, mine.acc, strict=True))
        assert "few_acc" in run.data.metrics and not any(k.startswith("per_class") for k in run.data.metrics)
        local = client.download_artifacts(run.info.run_id, "per_class.json", str(tmp_path / trial_id))
        table = json.loads(Path(local).read_text())
        rows = [dict(zip(table["columns"], r, strict=True)) for r in table["data"]]
        last = per_class[(per_class.trial_id == trial_id) & (per_class.epoch == mine.epoch.max())]
        assert len(rows) == 10 and [r["train_count"] for r in rows] == sorted(last.train_count, reverse=True)
        by_class = dict(zip(last.class_index, last.accuracy, strict=True))
        assert all(math.isclose(r["accuracy"], by_class[r["class_index"]]) for r in rows)

    events = sorted(exp_dir.glob("tune/leg-*/*/events.out.tfevents.*"))
    assert len(events) == 2  # one per trial folder, <storage>/<name>/tune/leg-001/<trial>/
    for event_file in events:
        scalars = tb_scalars(event_file)
        acc = [v for _, v in scalars["ray/tune/acc"]]
        assert len(acc) == 2 and any(math.isclose(acc[-1], a, rel_tol=1e-6) for a in trials.final_acc)

    offline = sorted((exp_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(list(d.glob("*.wandb")) for d in offline)
