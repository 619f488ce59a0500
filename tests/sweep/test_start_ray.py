"""The local Ray a sweep starts: Ray's dashboard (the State API that cleans up a stopped Ray Train
trial's worker group) only when the trials need it, and a Ray started without it is restarted with
it when a later sweep or run needs it."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from hybridlt.sweep.tuner import own_state_api, start_ray  # noqa: E402


def _webui() -> str:
    return ray._private.worker._global_node.webui_url or ""


def test_dashboard_only_when_asked_and_added_later():
    if ray.is_initialized():
        ray.shutdown()
    try:
        start_ray(None, trial_slots=1, num_cpus=2, dashboard=False)
        assert _webui() == ""
        first = ray.get_runtime_context().gcs_address
        start_ray(None, trial_slots=1, num_cpus=2, dashboard=True)  # a Train sweep after a plain one
        assert ray.get_runtime_context().gcs_address != first  # restarted
        assert _webui().startswith("127.0.0.1:")
        from ray.util.state import list_nodes

        with own_state_api():  # the State API answers through the new dashboard
            assert len(list_nodes()) == 1
        with_dashboard = ray.get_runtime_context().gcs_address
        start_ray(None, trial_slots=1, num_cpus=2, dashboard=False)  # one with a dashboard is kept
        assert ray.get_runtime_context().gcs_address == with_dashboard
    finally:
        ray.shutdown()


def test_process_age_is_what_the_parent_saw(tmp_path):
    """The "imports" fixed cost: a child's own age can be neither more than the parent measured
    from launching it to reading its answer, nor less than the time it slept (psutil's
    create_time-based age was up to a second more: the kernel's boot time in whole seconds)."""
    import subprocess
    import sys
    import time

    code = ("import time\nstart = time.perf_counter()\nfrom hybridlt.sweep.tuner import process_age_s\n"
            "time.sleep(0.3)\nprint(process_age_s(), time.perf_counter() - start, flush=True)\n")
    for _ in range(3):
        launched = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        age, inside = map(float, child.stdout.readline().split())
        seen = time.perf_counter() - launched
        child.wait()
        assert inside <= age <= seen + 0.02, (inside, age, seen)


def test_stop_ray_kills_the_monitor_and_leaves_no_process(monkeypatch):
    """stop_ray kills the autoscaler monitor first (it outlasts Ray's one-second SIGTERM grace) and
    then shuts Ray down: none of the processes Ray started for this node is left running. Fails if
    a Ray upgrade renames the monitor's entry in the node's process table."""
    import psutil
    from ray._private import ray_constants, worker

    from hybridlt.sweep.tuner import stop_ray

    if ray.is_initialized():
        ray.shutdown()
    start_ray(None, trial_slots=1, num_cpus=2, dashboard=False)
    node = worker._global_node
    assert ray_constants.PROCESS_TYPE_MONITOR in node.all_processes
    started = [info.process.pid for infos in node.all_processes.values() for info in infos]
    monitor = node.all_processes[ray_constants.PROCESS_TYPE_MONITOR][0].process
    at_shutdown = []
    shutdown = ray.shutdown
    monkeypatch.setattr(ray, "shutdown", lambda *a, **k: (at_shutdown.append(monitor.poll()), shutdown(*a, **k)))
    stop_ray()
    assert not ray.is_initialized()
    assert at_shutdown == [-9]  # dead before ray.shutdown began: not left to its SIGTERM and one-second wait
    alive = [pid for pid in started if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert alive == []


def test_a_local_start_ignores_a_ray_it_could_join(monkeypatch):
    """Without --address a sweep starts its own Ray even where ray.init would join one (RAY_ADDRESS,
    or the cluster a `ray start` left in /tmp/ray): joining refused num_cpus with a ValueError (a
    traceback), or waited minutes on an address where nothing answers."""
    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # nothing listens on port 1
    try:
        start_ray(None, trial_slots=1, num_cpus=1, dashboard=False)
        assert ray.cluster_resources()["CPU"] == 1 and ray.cluster_resources()["hybridlt_trial"] == 1
        assert not ray.get_runtime_context().gcs_address.endswith(":1")
    finally:
        ray.shutdown()


@pytest.mark.parametrize(("address", "said"), [
    ("127.0.0.1:1", "--address 127.0.0.1:1: no Ray cluster answers there (Connection refused)"),
    ("nohost.invalid:6379", "--address nohost.invalid:6379: no Ray cluster answers there ("),
    ("not-an-address", "--address not-an-address: Invalid address format: not-an-address; start one with"),
])
def test_an_address_where_no_ray_answers_is_one_line_at_once(address, said):
    """A host:port is probed before ray.init, which waits minutes where nothing listens."""
    import time

    from hybridlt.errors import InputError

    if ray.is_initialized():
        ray.shutdown()
    start = time.perf_counter()
    with pytest.raises(InputError) as err:
        start_ray(address, trial_slots=1)
    assert said in str(err.value) and "\n" not in str(err.value)
    assert time.perf_counter() - start < 10  # the probe's 5 s at most, not Ray's retries
    assert not ray.is_initialized()
