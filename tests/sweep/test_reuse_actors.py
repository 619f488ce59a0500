"""Reused trial processes on a real local Ray: a grid A, B, A run one at a time lands in one actor
process (the pid Tune records with every result), and A's epochs are bit-identical both times."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")

from hybridlt.sweep.results import read_dataset  # noqa: E402
from hybridlt.sweep.spec import load_sweep_spec  # noqa: E402
from hybridlt.sweep.tuner import run_sweep, start_ray  # noqa: E402
from tests.conftest import TINY  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Pids:
    """Driver-side Tune callback: the worker pid of every result, per trial."""

    def __init__(self):
        self.by_trial: dict[str, set[int]] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.by_trial.setdefault(trial.trial_id, set()).add(result["pid"])


def test_a_b_a_in_one_reused_process(tmp_path, monkeypatch):
    import threading

    from ray.tune import Callback

    from hybridlt.sweep import tuner

    warmed = []
    real_warm = tuner.warm_tune_telemetry
    monkeypatch.setattr(tuner, "warm_tune_telemetry",
                        lambda: (warmed.append(threading.current_thread().name), real_warm()))

    class PidCallback(Pids, Callback):
        pass

    doc = {"name": "reuse", "storage": str(tmp_path / "sweeps"), "base": str(ROOT / "configs" / "quickstart.yaml"),
           "overrides": [*TINY, "train.epochs=2"], "search": {"algorithm": "grid"},
           "space": {"loss.temperature": {"grid": [0.1, 0.7, 0.1]}},
           "scheduler": {"kind": "none"}, "trials": 1, "concurrency": 1}
    (tmp_path / "reuse.yaml").write_text(yaml.safe_dump(doc))
    spec, base = load_sweep_spec(tmp_path / "reuse.yaml")
    pids = PidCallback()
    timings: dict = {}
    if ray.is_initialized():
        ray.shutdown()
    try:  # the sweep starts its own Ray: trials in their own process need no dashboard, none starts
        trials, _ = run_sweep(spec, base, callbacks=[pids], timings=timings)
        webui = ray._private.worker._global_node.webui_url
    finally:
        ray.shutdown()
    assert not webui
    assert trials.num_rows == 3
    assert len(pids.by_trial) == 3 and all(len(p) == 1 for p in pids.by_trial.values())
    assert len(set().union(*pids.by_trial.values())) == 1  # the three trials ran in one process
    rows = read_dataset(Path(spec.storage_uri) / "reuse" / "results", "epochs").to_pylist()
    by_temp: dict = {}
    params = {r["trial_id"]: r["param.loss.temperature"] for r in trials.to_pylist()}
    for r in sorted(rows, key=lambda r: (r["trial_id"], r["epoch"])):
        by_temp.setdefault(params[r["trial_id"]], {}).setdefault(r["trial_id"], []).append(
            (r["loss"], r["con_loss"], r["ce_loss"], r["acc"], r["balanced_acc"]))
    first, again = by_temp[0.1].values()
    assert first == again and len(first) == 2
    (other,) = by_temp[0.7].values()
    assert other != first
    assert timings["tune_start_s"] > 0 and timings["ray_start_s"] >= 0 and timings["imports_s"] > 0
    assert warmed == ["hybridlt-prepare"]  # Tune's telemetry imports, done while Ray started
    # Tune's own loggers: result.json only (its ResultGrid reads it), no CSV, no TensorBoard files
    folders = [d for d in (Path(spec.storage_uri) / "reuse" / "tune").glob("leg-*/*") if d.is_dir()]
    assert len(folders) == 3
    assert all((d / "result.json").is_file() and not (d / "progress.csv").exists()
               and not list(d.glob("events.out.tfevents.*")) for d in folders)


def test_warm_tune_telemetry_leaves_nothing_for_fit_to_import():
    """Tune's usage telemetry imports Ray's MLflow/W&B/Comet/Aim integrations at every fit given a
    callback (mlflow and wandb with them): after the warm-up it imports nothing. A fresh process,
    since this one may have imported them already."""
    import subprocess

    code = ("import sys\n"
            "from ray.air._internal.usage import _count_callbacks\n"
            "from ray.tune import Callback\n"
            "from hybridlt.sweep.tuner import warm_tune_telemetry\n"
            "cold = set(sys.modules)\n"
            "warm_tune_telemetry()\n"
            "warmed = set(sys.modules) - cold\n"
            "before = set(sys.modules)\n"
            "_count_callbacks([Callback()])\n"
            "print(len(warmed) > 0, sorted(set(sys.modules) - before))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout.strip()
    assert out == "True []"


class Staged:
    """Driver-side Tune callback: the most trials Tune held PENDING at once (created, not yet running)."""

    def __init__(self):
        self.most_pending = 0

    def on_step_begin(self, iteration, trials, **info):
        self.most_pending = max(self.most_pending, sum(t.status == "PENDING" for t in trials))


def test_both_slots_are_staged_at_once_and_the_setting_is_restored(tmp_path, monkeypatch):
    """Tune stages one trial at a time for a searcher it does not see wrapped in a ConcurrencyLimiter:
    the second slot's process was only asked for once the first had started. The sweep lets it stage
    ``concurrency`` trials, for the duration of the fit only."""
    from ray.tune import Callback

    class StagedCallback(Staged, Callback):
        pass

    monkeypatch.delenv("TUNE_MAX_PENDING_TRIALS_PG", raising=False)
    doc = {"name": "staged", "storage": str(tmp_path / "sweeps"), "base": str(ROOT / "configs" / "quickstart.yaml"),
           "overrides": [*TINY, "train.epochs=1"], "search": {"algorithm": "random"},
           "space": {"loss.temperature": {"uniform": [0.05, 0.5]}},
           "scheduler": {"kind": "none"}, "trials": 4, "concurrency": 2}
    (tmp_path / "staged.yaml").write_text(yaml.safe_dump(doc))
    spec, base = load_sweep_spec(tmp_path / "staged.yaml")
    staged, pids = StagedCallback(), type("P", (Pids, Callback), {})()
    start_ray(None, trial_slots=2, num_cpus=2)
    try:
        trials, _ = run_sweep(spec, base, callbacks=[staged, pids])
    finally:
        ray.shutdown()
    assert trials.num_rows == 4
    assert staged.most_pending == 2  # Tune's own default here: 1
    assert len(set().union(*pids.by_trial.values())) == 2  # two reused processes, one per slot
    assert "TUNE_MAX_PENDING_TRIALS_PG" not in os.environ


def test_pending_trials_follows_tune_and_keeps_a_users_value(monkeypatch):
    from ray.tune.execution.tune_controller import _get_max_pending_trials
    from ray.tune.search import Searcher, SearchGenerator

    from hybridlt.sweep.tuner import pending_trials

    search = SearchGenerator(Searcher(metric="acc", mode="max"))
    monkeypatch.delenv("TUNE_MAX_PENDING_TRIALS_PG", raising=False)
    assert _get_max_pending_trials(search) == 1  # what Tune does for a self-limiting searcher
    with pending_trials(3):
        assert _get_max_pending_trials(search) == 3
    assert _get_max_pending_trials(search) == 1
    monkeypatch.setenv("TUNE_MAX_PENDING_TRIALS_PG", "5")
    with pending_trials(3):
        assert _get_max_pending_trials(search) == 5
    assert _get_max_pending_trials(search) == 5
