"""The Python API end to end (train, sweep, ablate, export_best, load_results) and every catalogue
metric as a sweep objective, on a real local Ray; and a sweep launched from a folder of foreign code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ray = pytest.importorskip("ray")

import hybridlt  # noqa: E402
from hybridlt.sweep.config import ConfigError  # noqa: E402
from hybridlt.sweep.metrics import FINAL_METRICS  # noqa: E402
from hybridlt.sweep.tuner import start_ray  # noqa: E402
from tests.conftest import TINY  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
QUICK = str(ROOT / "configs" / "quickstart.yaml")


@pytest.fixture(scope="module")
def local_ray():
    start_ray(None, trial_slots=4, num_cpus=2)
    yield
    ray.shutdown()


def _spec(tmp_path, name, epochs=2, **top):
    doc = {"name": name, "storage": str(tmp_path / "sweeps"), "base": QUICK,
           "overrides": [*TINY, f"train.epochs={epochs}"],
           "space": {"loss.temperature": {"loguniform": [0.05, 1.0]}}, "search": {"algorithm": "random", "seed": 3},
           "scheduler": {"kind": "none"}, "trials": 2, "concurrency": 2, **top}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_train_api_returns_the_run_and_raises_typed_errors(tmp_path):
    run = hybridlt.train(QUICK, [*TINY], out=tmp_path / "run")
    assert run.metrics["epoch"] == 2 and run.config.train.epochs == 2 and len(run.class_names) == 10
    tables = hybridlt.load_results(run.run_dir)
    assert tables.trials is None and sorted(tables.epochs.epoch) == [1, 2]
    assert len(tables.per_class) == 20 and set(tables.per_class.class_name) == {str(c) for c in range(10)}
    with pytest.raises(ConfigError, match=r"loss.temperature: Input should be greater than 0 \(value -1\)"):
        hybridlt.train(QUICK, ["loss.temperature=-1"], out=tmp_path / "bad")
    with pytest.raises(hybridlt.HybridLTError, match="already holds a run"):
        hybridlt.train(QUICK, [*TINY], out=tmp_path / "run")
    assert not (tmp_path / "bad").exists()


def test_sweep_export_and_load_results_api(tmp_path, local_ray, capsys, monkeypatch):
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:1")  # the caller's, e.g. for another Ray
    res = hybridlt.sweep(_spec(tmp_path, "api"))
    assert capsys.readouterr().out == ""  # quiet by default
    # Ray's State API reads this before any address it is given: a sweep must not leave its own behind
    assert os.environ["RAY_API_SERVER_ADDRESS"] == "http://127.0.0.1:1"
    assert res.store.endswith("api/results") and len(res.trials) == 2 and set(res.trials.status) == {"completed"}
    best = hybridlt.export_best(res.store, tmp_path / "best.yaml")
    assert best["final_acc"] == res.trials.final_acc.max()
    exported = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert exported["name"].endswith("-best")
    assert exported["loss"]["temperature"] == pytest.approx(best["param.loss.temperature"])
    with pytest.raises(hybridlt.HybridLTError, match="exists; pass --force"):
        hybridlt.export_best(res.store, tmp_path / "best.yaml")
    tables = hybridlt.load_results(res.store)
    assert len(tables.epochs) == 4 and len(tables.per_class) == 40


def test_the_exported_best_config_reproduces_its_trial(tmp_path, local_ray):
    """The one final run of the exported config gives the trial's numbers: the trial ran on the one
    thread its CPU allows, this process has 2 (conftest), and float sums differ between the two."""
    import torch

    res = hybridlt.sweep(_spec(tmp_path, "repro"))
    best = hybridlt.export_best(res.store, tmp_path / "best.yaml")
    text = (tmp_path / "best.yaml").read_text()
    assert yaml.safe_load(text)["train"]["threads"] == 1 and "# train.threads: 1, as the trial ran" in text
    assert torch.get_num_threads() == 2
    run = hybridlt.train(tmp_path / "best.yaml", out=tmp_path / "final")
    assert torch.get_num_threads() == 2  # train.threads held for the run only
    tables = hybridlt.load_results(res.store)
    trial = tables.epochs[tables.epochs.trial_id == best["trial_id"]].sort_values("epoch")
    final = hybridlt.load_results(run.run_dir).epochs.sort_values("epoch")
    for column in ("loss", "acc", "few_acc"):  # bit-identical, not approximately equal
        assert trial[column].tolist() == final[column].tolist(), column


def test_ablate_api_runs_variants_by_seeds_and_reports(tmp_path, local_ray):
    doc = {"name": "abl", "storage": str(tmp_path / "abl"), "base": QUICK, "overrides": [*TINY, "train.epochs=1",
           "optim.warmup_epochs=0"], "variants": {"sc": ["loss.contrastive=sc"], "psc": ["loss.contrastive=psc"]},
           "seeds": [0, 1], "concurrency": 2}
    (tmp_path / "abl.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    table = hybridlt.ablate(tmp_path / "abl.yaml")
    overall = table[table.metric == "overall"].set_index("variant")
    assert list(overall.index) == ["sc", "psc"] and list(overall.n) == [2, 2]
    assert pd.isna(overall.loc["sc", "diff_vs_ref"]) and not pd.isna(overall.loc["psc", "diff_vs_ref"])
    assert (tmp_path / "abl" / "abl" / "ablation.md").is_file()
    again = hybridlt.ablate(report=tmp_path / "abl" / "abl", reference="psc").set_index(["variant", "metric"])
    assert again.loc[("sc", "overall"), "diff_vs_ref"] == pytest.approx(-overall.loc["psc", "diff_vs_ref"])


@pytest.mark.parametrize("metric", FINAL_METRICS)
def test_every_catalogue_metric_works_as_the_objective(tmp_path, local_ray, metric):
    """The spec accepts it, ASHA and Optuna see it, the trials table has its column and export picks by it."""
    res = hybridlt.sweep(_spec(tmp_path, f"obj-{metric}", epochs=1, trials=1, search={"algorithm": "tpe", "seed": 1},
                               scheduler={"kind": "asha", "grace_period": 1, "reduction_factor": 2},
                               objective={"metric": metric}))
    row = res.trials.iloc[0]
    assert row.status == "completed" and row[f"final_{metric}"] == row[f"final_{metric}"], row.error
    epochs = hybridlt.load_results(res.store).epochs
    assert row[f"final_{metric}"] == pytest.approx(epochs[metric].iloc[-1])
    best = hybridlt.export_best(res.store, tmp_path / "best.yaml")
    assert best["trial_id"] == row.trial_id and best["_metric"] == metric


def test_sweep_from_a_folder_holding_its_own_model_and_data(tmp_path):
    """A user's model.py, data.py, sweep.py in the working folder are never imported, by driver or trials."""
    for room in ("model", "data", "sweep", "dashboards"):
        (tmp_path / f"{room}.py").write_text(f"raise ImportError('the user\\'s own {room}.py was imported')\n")
    spec = _spec(tmp_path, "foreign")
    done = subprocess.run([sys.executable, "-m", "hybridlt.cli", "sweep", str(spec), "--num-cpus", "2"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = hybridlt.load_results(tmp_path / "sweeps" / "foreign").trials
    assert list(trials.status) == ["completed", "completed"]
    assert "user's own" not in done.stderr + done.stdout
