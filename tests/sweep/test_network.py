"""During a local sweep, every listening socket of the Ray it starts is on loopback, but the ones
named in ``NOT_LOOPBACK`` (README, Security); and the Ray token it leaves is its owner's only.

The sweep runs in a child process (a fresh Ray that only ``start_ray`` configured, no sockets of
other tests): one trial through Ray Train with two DDP workers, so that Ray's servers, its agents,
the Train actors and torch.distributed's rendezvous all exist while the sockets are listed, from a
Tune callback on each reported epoch and from a thread polling twice a second.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from tests.conftest import TINY  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

LOOK = r'''
import json, sys, threading
import psutil
from ray.tune import Callback
from hybridlt.sweep.spec import load_sweep_spec
from hybridlt.sweep.tuner import run_sweep

listening, connected = {}, set()

def look():
    """Listening sockets (address, port, pid, process) and connected ports of this process and its descendants."""
    me = psutil.Process()
    for p in [me, *me.children(recursive=True)]:
        try:
            name, conns = p.name(), p.net_connections(kind="inet")
        except psutil.Error:
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN:
                listening[f"{c.laddr.ip} {c.laddr.port} {p.pid}"] = {"ip": c.laddr.ip, "port": c.laddr.port,
                                                                     "pid": p.pid, "name": name}
            elif c.status == psutil.CONN_ESTABLISHED and c.raddr:
                connected.add((c.raddr.ip, c.raddr.port))

class Look(Callback):
    def on_trial_result(self, iteration, trials, trial, result, **info):
        look()

spec, base = load_sweep_spec(sys.argv[1])
done = threading.Event()
def poll():
    while not done.wait(0.5):
        look()
threading.Thread(target=poll, daemon=True).start()
trials, _ = run_sweep(spec, base, callbacks=[Look()], num_cpus=2)
done.set()
from ray._private import ray_constants
json.dump({"listening": list(listening.values()), "connected": sorted(connected), "driver": psutil.Process().pid,
           "trials": trials.to_pylist() if trials is not None else [],
           "cluster_flag_restored": ray_constants.ENABLE_RAY_CLUSTER}, open(sys.argv[2], "w"), default=str)
'''


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1, an IPv6 socket held to IPv4 loopback
    return (mapped or address).is_loopback


def torch_rendezvous_store(sock: dict, seen: dict) -> bool:
    """torch.distributed's TCPStore: rank 0 of a Ray Train worker group hosts the process group's store,
    and torch binds its server to every interface whatever MASTER_ADDR says (Ray Train passes no socket
    of its own). Told apart by: a wildcard address, in a Ray Train worker, which the ranks reach on
    loopback, and one such socket per worker at most."""
    wildcard = ipaddress.ip_address(sock["ip"]).is_unspecified
    in_worker = sock["name"] == "ray::RayTrainWorker"
    reached = any(port == sock["port"] and is_loopback(ip) for ip, port in seen["connected"])
    alone = sum(1 for s in seen["listening"] if s["pid"] == sock["pid"] and not is_loopback(s["ip"])) == 1
    return wildcard and in_worker and reached and alone


# The sockets Ray (and the libraries under it) cannot be held to loopback, by name; README, Security.
NOT_LOOPBACK = {"torch.distributed TCPStore (rank 0 of a multi-worker trial)": torch_rendezvous_store}


def tiny_train_sweep(tmp_path: Path) -> Path:
    doc = {"name": "net", "storage": str(tmp_path / "sweeps"), "base": str(ROOT / "configs" / "quickstart.yaml"),
           "overrides": [*TINY, "train.epochs=2", "train.batch_size=32"],
           "space": {"loss.temperature": {"loguniform": [0.05, 1.0]}}, "scheduler": {"kind": "none"},
           "resources": {"workers": 2, "cpus_per_worker": 1}, "trials": 1, "concurrency": 1}
    path = tmp_path / "net.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def seen(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("network")
    out = tmp / "seen.json"
    proc = subprocess.run([sys.executable, "-c", LOOK, str(tiny_train_sweep(tmp)), str(out)], cwd=tmp,
                          capture_output=True, text=True, timeout=420,
                          env={**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},  # a local Ray
                               "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_the_sockets_were_listed_while_the_sweep_ran(seen):
    """Not vacuous: the trial finished, and every kind of Ray process was seen listening."""
    assert [t["status"] for t in seen["trials"]] == ["completed"]
    names = {s["name"] for s in seen["listening"]}
    assert {"gcs_server", "raylet", "ray::DashboardAgent", "ray::RayTrainWorker"} <= names, names
    assert any(s["pid"] == seen["driver"] for s in seen["listening"])  # the driver's own gRPC server
    assert len({s["pid"] for s in seen["listening"] if s["name"] == "ray::RayTrainWorker"}) == 2


def test_every_listening_socket_is_on_loopback_but_the_named_ones(seen):
    exposed = [s for s in seen["listening"] if not is_loopback(s["ip"])
               and not any(rule(s, seen) for rule in NOT_LOOPBACK.values())]
    assert not exposed, "listening beyond loopback: " + "; ".join(
        f"{s['name']} (pid {s['pid']}) on {s['ip']}:{s['port']}" for s in exposed)


def test_ray_servers_themselves_are_on_loopback(seen):
    """Stricter for Ray's own processes: none of gcs_server, the raylet, its agents or the driver is excused."""
    ray_own = [s for s in seen["listening"] if s["name"] != "ray::RayTrainWorker"]
    assert ray_own and all(is_loopback(s["ip"]) for s in ray_own), [s for s in ray_own if not is_loopback(s["ip"])]


def test_ray_starts_with_its_cluster_flag_restored(seen):
    """``loopback_node`` changes Ray's flag for its own ``ray.init`` only."""
    assert seen["cluster_flag_restored"] is True


def test_ray_token_is_readable_by_its_owner_only(seen):
    token = Path.home() / ".ray" / "auth_token"
    if not token.exists():
        pytest.skip("this Ray wrote no ~/.ray/auth_token (token authentication off)")
    assert token.stat().st_mode & 0o077 == 0, oct(token.stat().st_mode)


@pytest.mark.parametrize("ip, expected", [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True),
                                          ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("::", False),
                                          ("192.0.2.2", False), ("::ffff:192.0.2.2", False), ("fe80::1%eth0", False)])
def test_is_loopback(ip, expected):
    assert is_loopback(ip) is expected
