"""ray_cluster.yaml against the autoscaler schema shipped in the ray wheel, and a sweep across two
local Ray nodes (a head and a second ``ray start --address`` node on this machine)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")
jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


def validate(doc):
    from ray.autoscaler._private.util import prepare_config, validate_config

    jsonschema.validate(doc, SCHEMA)
    validate_config(prepare_config(copy.deepcopy(doc)))


def test_cluster_yaml_is_valid_and_scales_gpus_from_zero():
    doc = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    validate(doc)
    assert doc["provider"]["type"] == "aws"
    gpu_types = [t for t in doc["available_node_types"].values() if t["resources"].get("GPU", 0) > 0]
    assert gpu_types and all(t["min_workers"] == 0 for t in gpu_types)
    assert doc["available_node_types"][doc["head_node_type"]]["resources"]["GPU"] == 0
    assert doc["available_node_types"][doc["head_node_type"]]["resources"]["hybridlt_trial"] >= 1  # Train trials' slots
    assert any("pip install" in c and "-e ." in c for c in doc["setup_commands"])
    # fractional-GPU trials share each GPU through CUDA MPS, started on every GPU node before Ray;
    # a node type's own worker_setup_commands replace setup_commands, so they repeat the install
    for t in gpu_types:
        assert t["worker_setup_commands"][:len(doc["setup_commands"])] == doc["setup_commands"]
        assert t["worker_setup_commands"][-1].startswith("nvidia-cuda-mps-control -d")


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.pop("provider"), "provider"),
    (lambda d: d.update(nodes=3), "nodes"),
    (lambda d: d["available_node_types"]["gpu_1x"]["resources"].update(GPU=0.5), "0.5"),
    (lambda d: d.update(head_node_type="missing"), "head_node_type"),
    (lambda d: d.update(max_workers="eight"), "eight"),
])
def test_bad_cluster_files_are_rejected(mutate, expected):
    doc = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    mutate(doc)
    with pytest.raises(Exception) as info:  # jsonschema.ValidationError or the autoscaler's ValueError
        validate(doc)
    assert expected in str(info.value)


def _wait_for_nodes(env, address: str, count: int, timeout: float = 90) -> None:
    probe = ("import ray,time,sys\n"
             f"ray.init(address='{address}', log_to_driver=False)\n"
             f"end = time.time() + {timeout}\n"
             f"while sum(n['Alive'] for n in ray.nodes()) < {count} and time.time() < end: time.sleep(0.5)\n"
             f"sys.exit(0 if sum(n['Alive'] for n in ray.nodes()) >= {count} else 1)\n")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=timeout + 30)
    assert done.returncode == 0, done.stderr[-2000:]


def test_sweep_across_two_local_nodes(tmp_path):
    from tests.conftest import TINY

    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled",
           "RAY_API_SERVER_ADDRESS": "http://127.0.0.1:28265"}
    ray_bin = str(Path(sys.executable).parent / "ray")
    port = 26379
    temp = tempfile.mkdtemp(prefix="ray2n", dir="/tmp")  # AF_UNIX socket paths must stay short
    common = ["--num-cpus=1", "--disable-usage-stats", "--block"]
    nodes = []
    try:  # each node in its own session with --block, so that killing its group stops exactly it
        nodes.append(subprocess.Popen(
            [ray_bin, "start", "--head", f"--port={port}", '--resources={"hybridlt_trial": 2}',
             "--include-dashboard=true", "--dashboard-host=127.0.0.1", "--dashboard-port=28265", f"--temp-dir={temp}",
             *common], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        _wait_for_nodes(env, f"127.0.0.1:{port}", 1)
        nodes.append(subprocess.Popen([ray_bin, "start", f"--address=127.0.0.1:{port}", *common], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        _wait_for_nodes(env, f"127.0.0.1:{port}", 2)
        spec = {
            "name": "twonode", "storage": str(tmp_path / "sweeps"), "base": str(ROOT / "configs" / "quickstart.yaml"),
            "overrides": [*TINY, "train.epochs=2"], "space": {"loss.temperature": {"loguniform": [0.05, 1.0]}},
            "scheduler": {"kind": "none"}, "trials": 2, "concurrency": 2,
        }
        path = tmp_path / "twonode.yaml"
        path.write_text(yaml.safe_dump(spec))
        cmd = [sys.executable, "-m", "hybridlt.cli", "sweep", str(path), "--address", f"127.0.0.1:{port}"]
        done = subprocess.run(cmd,
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        from hybridlt.sweep.results import read_dataset

        trials = read_dataset(tmp_path / "sweeps" / "twonode" / "results", "trials").to_pandas()
        assert len(trials) == 2 and (trials.status == "completed").all()
        epochs = read_dataset(tmp_path / "sweeps" / "twonode" / "results", "epochs").to_pandas()
        assert len(epochs) == 4
    finally:
        for proc in reversed(nodes):
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(nodes):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
