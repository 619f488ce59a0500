"""Autoscaling, exercised on this machine: Ray's fake multi-node provider (deploy/fake_multinode.yaml)
stands in for the cloud. A head with no CPUs, a sweep whose Train workers make the autoscaler add
nodes, one node killed mid-trial (its trial resumes on another from its checkpoint), idle nodes
removed at the end. Only the cluster this test starts is stopped (its own process group).

``pytest -m cluster`` selects the end-to-end test (about three minutes on 2 CPUs, ~7 GB of memory);
``-m "not cluster"`` leaves it out.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "fake_multinode.yaml"
HEAD_ID = "f" * 51 + "00000"  # the provider's fixed head id; worker nodes count up from ...00001
EPOCHS = 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fake_cluster_config_is_valid():
    from ray.autoscaler._private.util import prepare_config, validate_config

    doc = yaml.safe_load(CONFIG.read_text())
    validate_config(prepare_config(copy.deepcopy(doc)))
    assert doc["provider"]["module"].endswith("fake_multi_node.node_provider.FakeMultiNodeProvider")
    types = doc["available_node_types"]
    assert types[doc["head_node_type"]]["resources"]["CPU"] == 0  # the head offers no trial capacity
    assert types[doc["head_node_type"]]["resources"]["hybridlt_trial"] >= 1
    workers = [t for name, t in types.items() if name != doc["head_node_type"]]
    assert workers and all(t["min_workers"] == 0 and t["resources"]["CPU"] >= 1 for t in workers)


def test_a_cluster_plans_from_the_spec_concurrency(tmp_path):
    """With --address an explicit concurrency is the plan (nodes come on demand); without one the
    resources present now decide, and a head with no CPUs says what to set."""
    from hybridlt.sweep.config import ConfigError
    from hybridlt.sweep.spec import load_sweep_spec
    from hybridlt.sweep.tuner import concurrency_for
    from tests.sweep.test_spec import _spec

    spec, _ = load_sweep_spec(_spec(tmp_path, concurrency=3, trials=8))
    assert concurrency_for(spec, cpus=0, gpus=0, trials=8, on_cluster=True) == 3
    assert concurrency_for(spec, cpus=0, gpus=0, trials=2, on_cluster=True) == 2
    spec, _ = load_sweep_spec(_spec(tmp_path, concurrency=None, trials=8))
    assert concurrency_for(spec, cpus=2, gpus=0, trials=8, on_cluster=True) == 2
    with pytest.raises(ConfigError, match="set concurrency"):
        concurrency_for(spec, cpus=0, gpus=0, trials=8, on_cluster=True)
    with pytest.raises(ConfigError, match="resources"):  # a local Ray: no autoscaler to wait for
        concurrency_for(spec, cpus=0, gpus=0, trials=8)


class FakeCluster:
    """The head of a fake multi-node cluster, started with ``ray start --head --block`` in its own
    session: the cluster's processes (the autoscaler's nodes too) are in its process group, except
    the worker processes, which each raylet puts in a group of their own and ends with itself."""

    def __init__(self, tmp_path: Path):
        self.port, self.dashboard = _free_port(), _free_port()
        self.temp = tempfile.mkdtemp(prefix="rfk", dir="/tmp")  # AF_UNIX socket paths must stay short
        doc = yaml.safe_load(CONFIG.read_text())
        doc["provider"]["gcs_address"] = f"127.0.0.1:{self.port}"
        self.config = tmp_path / "fake_multinode.yaml"
        self.config.write_text(yaml.safe_dump(doc))
        self.head_resources = dict(doc["available_node_types"][doc["head_node_type"]]["resources"])
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled",
                    "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{self.dashboard}", "RAY_USAGE_STATS_ENABLED": "0"}
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        cpus = self.head_resources.pop("CPU")
        env = {**self.env, "RAY_FAKE_CLUSTER": "1", "RAY_enable_autoscaler_v2": "1",
               "AUTOSCALER_UPDATE_INTERVAL_S": "1",  # the autoscaler's loop: 1 s instead of 5
               "AUTOSCALER_METRIC_PORT": str(_free_port()),  # not the fixed 44217 another Ray may hold
               "RAY_CLOUD_INSTANCE_ID": HEAD_ID, "RAY_OVERRIDE_NODE_ID_FOR_TESTING": HEAD_ID}
        cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={self.port}",
               f"--num-cpus={cpus}", f"--resources={json.dumps(self.head_resources)}",
               f"--autoscaling-config={self.config}", f"--temp-dir={self.temp}", "--include-dashboard=true",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard}",
               f"--dashboard-agent-listen-port={_free_port()}", f"--ray-client-server-port={_free_port()}",
               "--disable-usage-stats"]
        self.log = open(Path(self.temp) / "head.log", "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        end, last = time.time() + 240, None
        while time.time() < end:
            assert self.proc.poll() is None, Path(self.temp, "head.log").read_text()[-3000:]
            try:
                if any(n.node_id == HEAD_ID and n.state == "ALIVE" for n in self.nodes()):
                    return
            except Exception as exc:  # the dashboard is not up yet
                last = exc
            time.sleep(1)
        raise AssertionError(f"the fake cluster's head did not come up in 240 s (last answer: {last!r}); "
                             "its log ends:\n" + Path(self.temp, "head.log").read_text()[-1500:])

    def nodes(self) -> list:
        """Every node the cluster has had, dead ones too (Ray's State API, through the head's dashboard)."""
        from ray.util.state import list_nodes

        return list_nodes(address=f"http://127.0.0.1:{self.dashboard}", limit=1000, raise_on_missing_output=False)

    def scaling(self) -> dict[str, dict[str, int]]:
        """The autoscaler's decisions, from its event file on the head (the dashboard's cluster events):
        {"added": {node type: count}, "removed (idle)": {...}, "removed (<cause>)": {...}}. (Ray 2.60's
        State API ``list_cluster_events`` answered HTTP 500 here.)"""
        out: dict[str, dict[str, int]] = {}
        for path in Path(self.temp).glob("session_2*/logs/events/event_AUTOSCALER.log"):  # not session_latest
            for line in path.read_text().splitlines():
                message = json.loads(line).get("message", "") if line.strip() else ""
                if found := re.fullmatch(r"Adding (\d+) node\(s\) of type (\S+)\.", message):
                    kind = "added"
                elif found := re.fullmatch(r"Removing (\d+) nodes of type (\S+) \((.+)\)\.", message):
                    kind = f"removed ({found[3]})"
                else:
                    continue
                counts = out.setdefault(kind, {})
                counts[found[2]] = counts.get(found[2], 0) + int(found[1])
        return out

    def processes(self):
        """This cluster's processes: the head's process group and their children (a raylet puts each
        worker in a process group of its own). Other Rays on this machine are in neither."""
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(os.getpgid(p.pid) == self.proc.pid for p in [proc, *proc.parents()]):
                    yield proc
            except (ProcessLookupError, psutil.Error):
                continue

    def train_workers(self) -> dict[str, str]:
        """Live Ray Train workers: trial id (their working directory is named after the Train run, which
        is named after the trial) -> the fake node they run on."""
        found = {}
        for proc in self.processes():
            try:
                if not (proc.info["cmdline"] or [""])[0].startswith("ray::RayTrainWorker"):
                    continue
                node = proc.environ().get("RAY_OVERRIDE_NODE_ID_FOR_TESTING")
                found[Path(proc.cwd()).name] = node
            except psutil.Error:
                continue
        return found

    def kill_node(self, node_id: str) -> int:
        """SIGKILL one fake node as a lost machine would go: its raylet, its workers and agents (all
        carry the node's id in their environment). Returns the processes killed."""
        killed = 0
        for proc in self.processes():
            try:
                if proc.environ().get("RAY_OVERRIDE_NODE_ID_FOR_TESTING") == node_id:
                    proc.kill()
                    killed += 1
            except psutil.Error:
                continue
        return killed

    def stop(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # ray start --block stops its processes
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            try:  # whatever is left of this cluster (the autoscaler's nodes, a slow GCS)
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)
            self.log.close()
        for logs in Path(self.temp).glob("session_2*/logs"):  # a few MB, kept beside the test for a post-mortem
            shutil.copytree(logs, self.config.parent / "ray-logs", dirs_exist_ok=True, symlinks=True)
        shutil.rmtree(self.temp, ignore_errors=True)


def _registered_epochs(train_dir: Path) -> list[int]:
    """Epochs of the checkpoints Ray Train has registered for one run (its checkpoint manager's snapshot)."""
    try:
        snapshot = json.loads((train_dir / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, ValueError):
        return []
    return sorted(int(r["metrics"]["epoch"]) for r in snapshot.get("checkpoint_results", []))


def _epoch_files(results: Path, trial_id: str) -> dict[int, int]:
    """One trial's ``epochs`` files: epoch -> modification time (ns)."""
    out = {}
    for path in (results / "epochs").glob(f"{trial_id}-epoch-*.parquet"):
        out[int(path.stem.rsplit("-", 1)[1])] = path.stat().st_mtime_ns
    return out


@pytest.mark.cluster
def test_sweep_scales_out_survives_a_lost_node_and_scales_in(tmp_path, monkeypatch):
    from hybridlt.sweep.results import read_dataset
    from tests.conftest import TINY

    # Ray's State API prefers this variable to the address it is given (another Ray's, if set)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)

    cluster = FakeCluster(tmp_path)
    sweep = None
    started = time.time()
    try:
        cluster.start()
        assert [n.node_id for n in cluster.nodes() if n.state == "ALIVE"] == [HEAD_ID]  # no worker yet
        spec = {
            "name": "autoscale", "storage": str(tmp_path / "sweeps"), "base": str(ROOT / "configs" / "quickstart.yaml"),
            "overrides": [*TINY, f"train.epochs={EPOCHS}"], "space": {"loss.temperature": {"loguniform": [0.05, 1.0]}},
            "scheduler": {"kind": "none"}, "trials": 2, "concurrency": 2,
            # Train workers (not the trial function) hold the CPUs; a lost worker restarts from its checkpoint
            "resources": {"use_train": True, "workers": 1, "cpus_per_worker": 1, "max_failures": 1},
        }
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
        out = open(tmp_path / "sweep.log", "w")  # noqa: SIM115
        sweep = subprocess.Popen([sys.executable, "-m", "hybridlt.cli", "sweep", str(tmp_path / "spec.yaml"),
                                  "--address", cluster.address], env=cluster.env, cwd=tmp_path, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        results, train = tmp_path / "sweeps" / "autoscale" / "results", tmp_path / "sweeps" / "autoscale" / "train"
        seen: dict[str, list[str]] = {}  # trial -> the nodes its Train worker was seen on, in order
        killed = None  # (trial, node, epoch files then, registered checkpoint epochs then)
        deadline = time.time() + 420
        while sweep.poll() is None:
            assert time.time() < deadline, "the sweep did not finish in 7 minutes"
            for trial, node in cluster.train_workers().items():
                if not seen.get(trial) or seen[trial][-1] != node:
                    seen.setdefault(trial, []).append(node)
                registered = _registered_epochs(train / trial)
                if killed is None and registered and 2 <= registered[-1] <= EPOCHS - 3:
                    files = _epoch_files(results, trial)
                    assert cluster.kill_node(node) > 0
                    killed = (trial, node, files, registered)
            time.sleep(0.3)
        log = (tmp_path / "sweep.log").read_text()
        assert sweep.returncode == 0, log[-4000:]
        sweep_done = time.time()

        # scaled out: the head had no CPUs, every Train worker ran on a node the autoscaler added
        nodes = {n.node_id: n for n in cluster.nodes()}
        added = set(nodes) - {HEAD_ID}
        assert len(added) >= 2, nodes
        assert set(seen) and all(node in added for path in seen.values() for node in path), seen
        scaling = cluster.scaling()
        assert set(scaling["added"]) == {"cpu_1"}, scaling  # CPU trials never start the (fake) GPU node type
        assert sum(scaling["added"].values()) == len(added), (scaling, added)

        # the lost node: its trial went on elsewhere, from its checkpoint, and completed
        assert killed is not None, f"no trial was caught mid-run to kill a node under it: {seen}"
        trial, node, before, registered = killed
        assert nodes[node].state == "DEAD"
        assert seen[trial][0] == node and len(seen[trial]) >= 2 and node not in seen[trial][1:], seen
        after = _epoch_files(results, trial)
        assert sorted(after) == list(range(1, EPOCHS + 1))  # every epoch, once
        resumed_at = registered[-1]
        assert all(after[e] == before[e] for e in range(1, resumed_at + 1)), \
            f"epochs up to the checkpoint (epoch {resumed_at}) were trained again: the trial restarted from scratch"
        trials = read_dataset(results, "trials").to_pandas()
        assert len(trials) == 2 and (trials.status == "completed").all() and (trials.epochs_done == EPOCHS).all()
        epochs = read_dataset(results, "epochs").to_pandas()
        assert not epochs.duplicated(["trial_id", "epoch"]).any() and len(epochs) == 2 * EPOCHS

        # scaled in: the idle nodes go (idle_timeout_minutes 0.1), the head stays. Ray Train registers each
        # run's resources with Ray's autoscaling coordinator for 180 s at a time and cancels them when its
        # controller shuts down; a request left behind when the sweep ends (seen here once) holds its nodes
        # until it expires, so allow 180 s + the idle timeout + the autoscaler's loop.
        end = time.time() + 240
        while time.time() < end and [n for n in cluster.nodes() if n.state == "ALIVE" and n.node_id != HEAD_ID]:
            time.sleep(1)
        scaled_in = time.time() - sweep_done
        alive = [n.node_id for n in cluster.nodes() if n.state == "ALIVE"]
        assert alive == [HEAD_ID], f"idle nodes not removed within 240 s of the sweep's end: {alive}"
        scaling = cluster.scaling()  # every node but the lost one went because it was idle
        assert sum(scaling.get("removed (idle)", {}).values()) >= len(added) - 1, scaling
        print(f"fake cluster: {scaling}; node {node[-5:]} killed under trial {trial} at epoch {max(before)} "
              f"(checkpoint {resumed_at}), went on on {seen[trial][-1][-5:]}; sweep {sweep_done - started:.0f}s, "
              f"only the head left {max(scaled_in, 0):.0f}s after it")
    finally:
        if sweep is not None:
            if sweep.poll() is None:
                os.killpg(sweep.pid, signal.SIGKILL)
                sweep.wait(timeout=30)
            out.close()
        cluster.stop()
