"""One driver per sweep: the lock in the sweep's storage, its takeover, and two real drivers."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hybridlt.sweep.lock import STALE_S, SweepLock, SweepLockedError

ROOT = Path(__file__).resolve().parents[2]


def _race(folder: str, barrier, results) -> None:
    lock = SweepLock(folder, "race", say=lambda m: None)
    barrier.wait()
    try:
        lock.acquire()
        results.put(("got", os.getpid()))
        time.sleep(1.0)  # hold it while the other tries
        lock.release()
    except SweepLockedError as exc:
        results.put(("refused", str(exc)))


def test_of_two_drivers_starting_together_exactly_one_gets_the_lock(tmp_path):
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    outcomes = sorted(results.get(timeout=5)[0] for _ in range(2))
    assert outcomes == ["got", "refused"]
    assert not (tmp_path / "driver.lock").exists()  # released by its holder


def test_a_live_holder_refuses_with_its_name_and_how_to_take_over(tmp_path):
    first = SweepLock(str(tmp_path), "mine")
    first.acquire()
    try:
        with pytest.raises(SweepLockedError) as err:
            SweepLock(str(tmp_path), "mine").acquire()
        text = str(err.value)
        doc = json.loads((tmp_path / "driver.lock").read_text())
        assert "'mine'" in text and doc["holder"] in text and f"pid {os.getpid()}" in text
        assert "--resume" in text and "taken over" in text
    finally:
        first.release()


@pytest.mark.parametrize("stale", ["dead pid here", "old heartbeat elsewhere"])
def test_a_dead_drivers_lock_is_taken_over_with_a_message(tmp_path, stale):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = os.uname().nodename if stale == "dead pid here" else "another-host"
    beat = time.time() if stale == "dead pid here" else time.time() - STALE_S - 5
    (tmp_path / "driver.lock").write_text(json.dumps({"holder": f"someone@{host} pid {dead.pid}", "host": host,
                                                      "pid": dead.pid, "token": "old", "heartbeat": beat}))
    said = []
    lock = SweepLock(str(tmp_path), "s", say=said.append)
    lock.acquire()
    try:
        assert len(said) == 1 and "taking over" in said[0] and f"someone@{host}" in said[0]
        assert json.loads((tmp_path / "driver.lock").read_text())["token"] == lock.token
    finally:
        lock.release()


def test_a_second_real_driver_exits_2_while_the_first_runs(tmp_path):
    pytest.importorskip("ray")
    from tests.conftest import TINY

    spec = {"name": "two", "storage": str(tmp_path / "sweeps"), "base": str(ROOT / "configs" / "quickstart.yaml"),
            "overrides": [*TINY], "space": {"loss.temperature": {"loguniform": [0.05, 1.0]}},
            "scheduler": {"kind": "none"}, "trials": 2, "concurrency": 1}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    marker = tmp_path / "paused"
    cli = [sys.executable, "-m", "hybridlt.cli", "sweep", "two.yaml", "--num-cpus", "1"]
    first = subprocess.Popen(cli, cwd=tmp_path, env={**env, "HYBRIDLT_FAULT_PAUSE": f"before_trials:{marker}",
                                                     "HYBRIDLT_FAULT_PAUSE_S": "30"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not marker.exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert marker.exists(), "the first driver never got past starting Ray"
        for extra in (["--resume"], []):  # a resume while it runs; the same sweep started again
            second = subprocess.run([*cli, *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, second.stderr[-2000:]
            lines = [ln for ln in second.stderr.splitlines() if ln.startswith("error:")]
            assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr[-2000:]
            assert "'two'" in lines[0]
            if extra:
                assert f"pid {first.pid}" in lines[0] and "another driver" in lines[0]
            else:
                assert "already exists" in lines[0] and "--resume" in lines[0]
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
