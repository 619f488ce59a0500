"""``bench/sweep_vs_optuna.py --cpu-split``: CPU-seconds per process group of a run's process tree."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "sweep_vs_optuna.py"
_spec = importlib.util.spec_from_file_location("bench_sweep_vs_optuna", BENCH)
svo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(svo)

SPIN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\ntime.sleep(1.0)\n"


def test_groups_follow_ray_process_names():
    g = svo._cpu_group
    assert g(True, {"python -m hybridlt.cli sweep"}, "driver") == "driver"
    assert g(False, {"/venv/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server --port=0"}, "d") == "Ray GCS"
    assert g(False, {"/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --node_ip"}, "d") == "raylet"
    assert g(False, {"python -u /venv/ray/dashboard/agent.py --node-ip-address=127.0.0.1"}, "d") == "dashboard + agents"
    assert g(False, {"python -u /venv/ray/_private/log_monitor.py --session-dir"}, "d") == "Ray monitors"
    # a worker Ray prestarts is titled ray::IDLE until it runs something
    assert g(False, {"ray::IDLE"}, "d") == "idle Ray workers"
    assert g(False, {"ray::IDLE", "ray::ImplicitFunc.train"}, "d") == "trial processes"
    assert g(False, {"ray::_QueueActor.get"}, "d") == "other Ray actors"
    assert g(False, {"/bin/sh -c true"}, "d") == "other"


def test_cpu_seconds_of_a_process_and_its_child_are_counted_apart():
    """The root spins 0.5 CPU-s and starts a child (named like Ray's GCS) that spins 0.8 CPU-s: each
    group gets its own process's time, against ``time.process_time`` in the processes themselves."""
    child = SPIN.format(s=0.8) + "# gcs_server\n"
    root = ("import subprocess, sys\n"
            f"p = subprocess.Popen([sys.executable, '-c', {child!r}])\n" + SPIN.format(s=0.5) + "p.wait()\n")
    proc, groups = svo.run_with_cpu_split([sys.executable, "-c", root], None, True, "root", capture_output=True,
                                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert set(groups) == {"root", "Ray GCS"}
    # interpreter start-up adds a little; the last reading is taken in the 1 s each sleeps after spinning
    assert 0.5 <= groups["root"] < 0.5 + 0.4
    assert 0.8 <= groups["Ray GCS"] < 0.8 + 0.4


def test_without_split_it_is_a_plain_run():
    proc, groups = svo.run_with_cpu_split([sys.executable, "-c", "print('x')"], None, False, capture_output=True,
                                          text=True)
    assert proc.stdout == "x\n" and groups == {}
