"""The synthetic store generator: the same files a sweep writes, readable by the store's own reader."""

from __future__ import annotations

import numpy as np
import yaml

from hybridlt.dashboards import queries as q
from hybridlt.sweep.config import validate_run_config
from hybridlt.sweep.results import read_dataset
from tests.dashboards.synthetic import main, write_synthetic_store


def test_synthetic_store_has_the_sweep_layout(tmp_path):
    root = write_synthetic_store(tmp_path / "results", n_trials=6, n_classes=30, n_epochs=3, seed=1)
    trials = read_dataset(root, "trials").to_pandas()
    epochs = read_dataset(root, "epochs").to_pandas()
    per_class = read_dataset(root, "per_class").to_pandas()
    assert len(trials) == 6 and trials.trial_id.is_unique and set(trials.status) == {"completed", "stopped_early"}
    assert len(epochs) == trials.epochs_done.sum() and len(per_class) == 30 * len(epochs)
    for row in trials.itertuples():
        assert sorted(epochs[epochs.trial_id == row.trial_id].epoch) == list(range(1, row.epochs_done + 1))
        validate_run_config(yaml.safe_load(row.config_yaml))  # a config export-best can write
    last = epochs.sort_values("epoch").groupby("trial_id").last()
    np.testing.assert_allclose(trials.set_index("trial_id").final_acc.sort_index(), last.acc.sort_index())
    counts = per_class.drop_duplicates("class_index").set_index("class_index").train_count
    assert counts.max() == 500 and counts.min() == 5 and not counts.is_monotonic_decreasing  # shuffled, as iNat
    doc = yaml.safe_load((tmp_path / "results" / "sweep.yaml").read_text())
    assert doc["spec"]["objective"]["metric"] == "acc" and "loss.temperature" in doc["params"]


def test_synthetic_command_line_and_every_trial_complete(tmp_path, capsys):
    assert main([str(tmp_path / "s"), "--trials", "3", "--classes", "4", "--epochs", "2", "--stopped", "0",
                 "--workers", "1"]) == 0
    assert "3 trials x 4 classes x 2 epochs" in capsys.readouterr().out
    cache = q.ResultsCache(tmp_path / "s")
    cache.refresh()
    assert (cache.trials().status == "completed").all() and len(cache.last_per_class()) == 3
