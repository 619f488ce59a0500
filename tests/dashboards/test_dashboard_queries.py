"""Queries of the dashboard on small stores with known answers, and the bad inputs they must survive."""

from __future__ import annotations

import warnings

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from dashstores import KNOWN, known_store, write_known_trial

from hybridlt.dashboards import queries as q
from hybridlt.sweep.store import Location


@pytest.fixture
def cache(tmp_path):
    known_store(tmp_path / "results")
    c = q.ResultsCache(tmp_path / "results")
    assert c.refresh() and c.version == 1
    return c


def test_trials_frame_has_rows_params_and_objective(cache):
    trials = cache.trials().set_index("trial_id")
    assert sorted(trials.index) == ["t1", "t2", "t3"]
    assert trials.loc["t3", "status"] == "stopped_early" and trials.loc["t1", "epochs_done"] == 2
    assert trials.loc["t2", "final_acc"] == pytest.approx(0.65)
    assert q.param_columns(cache.trials()) == ["param.loss.temperature", "param.loss.contrastive"]
    assert cache.objective() == (["acc"], ["max"]) and cache.group_thresholds() == (100, 20)
    assert q.order_trials(cache.trials(), "acc")["trial_id"].tolist() == ["t2", "t1", "t3"]
    assert q.order_trials(cache.trials(), "acc", "min")["trial_id"].tolist() == ["t3", "t1", "t2"]


def test_heatmap_matrix_is_last_epoch_with_classes_ordered_by_training_count(cache):
    m = q.class_matrix(cache.last_per_class(), ["t2", "t1", "t3"])
    assert m.trial_ids == ["t2", "t1", "t3"] and m.n_classes == 4
    assert m.names == ["c", "b", "d", "a"]  # counts 200, 50, 20, 5
    np.testing.assert_allclose(m.counts, [200, 50, 20, 5])
    np.testing.assert_allclose(m.acc, [[1.0, 0.6, 0.6, 0.4], [0.9, 0.5, 0.3, 0.1], [0.2, 0.1, 0.0, 0.0]])
    np.testing.assert_array_equal(m.lo, [0, 1, 2, 3])


def test_binning_by_rank_averages_within_bins(cache):
    m = q.class_matrix(cache.last_per_class(), ["t1", "t2"], max_bins=2)
    assert m.names is None
    np.testing.assert_array_equal(m.lo, [0, 2]) and np.testing.assert_array_equal(m.hi, [1, 3])
    np.testing.assert_allclose(m.acc, [[0.7, 0.2], [0.8, 0.5]])
    np.testing.assert_allclose(m.counts, [125, 12.5])
    curves = q.class_curves(cache.last_per_class(), ["t1"], max_bins=2)
    assert curves["rank"].tolist() == [0.5, 2.5] and curves["accuracy"].round(6).tolist() == [0.7, 0.2]


def test_bin_mean_ignores_nan_and_inaturalist_size_bins():
    edges = q.bin_edges(5, 2)
    np.testing.assert_array_equal(edges, [0, 2, 5])
    np.testing.assert_allclose(q.bin_mean(np.array([[1.0, np.nan, 3.0, 5.0, np.nan]]), edges), [[1.0, 4.0]])
    assert np.isnan(q.bin_mean(np.array([np.nan, np.nan, 1.0]), np.array([0, 2, 3])))[0]
    edges = q.bin_edges(8142, 200)
    widths = np.diff(edges)
    assert len(edges) == 201 and edges[0] == 0 and edges[-1] == 8142 and widths.min() >= 40
    values = np.arange(8142, dtype=float)[None, :]
    assert q.bin_mean(values, edges)[0].sum() * 0 == 0 and q.bin_mean(values, edges).shape == (1, 200)
    np.testing.assert_allclose(np.sum(q.bin_mean(values, edges)[0] * widths), values.sum())  # means x widths = sum


def test_group_accuracy_and_boundaries(cache):
    groups = q.group_accuracy(cache.trials(), ["t1", "zzz"])
    assert groups["group"].tolist() == ["many", "medium", "few"]
    np.testing.assert_allclose(groups["accuracy"], [0.9, 0.4, 0.1])
    m = q.class_matrix(cache.last_per_class(), ["t1"])
    assert q.group_boundaries(m, (100, 20)) == [(0.5, "medium →"), (2.5, "few →")]
    assert q.group_boundaries(m, None) == []


def test_variant_accuracy_mean_and_std_over_seeds():
    trials = pd.DataFrame({"param.variant": ["full", "full", "no_curriculum", "no_curriculum", "solo"],
                           "param.seed": [0, 1, 0, 1, 0], "final_acc": [0.8, 0.6, 0.5, 0.5, 0.3],
                           "final_many_acc": [0.9, 0.7, 0.6, 0.6, 0.5], "final_medium_acc": [0.8] * 5,
                           "final_few_acc": [0.6, 0.4, 0.2, 0.4, 0.1]})
    assert q.is_ablation(trials) and not q.is_ablation(trials.drop(columns="param.seed"))
    out = q.variant_accuracy(trials).set_index(["variant", "group"])
    assert out.loc[("full", "all"), "mean"] == pytest.approx(0.7)
    assert out.loc[("full", "all"), "std"] == pytest.approx(np.std([0.8, 0.6], ddof=1))
    assert out.loc[("no_curriculum", "few"), "std"] == pytest.approx(np.std([0.2, 0.4], ddof=1))
    assert out.loc[("solo", "many"), "std"] == 0.0 and out.loc[("solo", "many"), "n"] == 1


def test_pareto_points_from_file_or_computed():
    trials = pd.DataFrame({"trial_id": ["a", "b", "c", "d"], "final_acc": [0.9, 0.8, 0.7, None],
                           "final_few_acc": [0.1, 0.5, 0.4, 0.9]})
    pts = q.pareto_points(trials, ["acc", "few_acc"], ["max", "max"])
    assert pts.set_index("trial_id")["on_front"].to_dict() == {"a": True, "b": True, "c": False}
    pts = q.pareto_points(trials, ["acc", "few_acc"], ["max", "max"], front_ids={"c"})
    assert pts[pts.on_front].trial_id.tolist() == ["c"]


def test_param_importance_returns_the_varying_params(cache):
    found, evaluator = q.param_importance(cache.trials(), "acc")
    assert set(found) == {"param.loss.temperature", "param.loss.contrastive"} and evaluator == "fANOVA"
    assert sum(found.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2 or more complete trials"):
        q.param_importance(cache.trials().head(1), "acc")


def test_importance_distributions_follow_the_column_types():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    trials = pd.DataFrame({"param.a": pd.array([1, 3, None], dtype="Int64"), "param.b": [0.1, 0.2, 0.3],
                           "param.c": ["x", "y", None], "param.d": [True, False, True], "param.same": [1, 1, 1],
                           "final_acc": [0.1, 0.2, 0.3]})
    d = q._distributions(trials, q.param_columns(trials))
    assert "param.same" not in d
    assert isinstance(d["param.a"], IntDistribution) and (d["param.a"].low, d["param.a"].high) == (1, 3)
    assert isinstance(d["param.b"], FloatDistribution) and isinstance(d["param.c"], CategoricalDistribution)
    assert d["param.d"].choices == ("False", "True")
    study = q.importance_study(trials, "acc")
    assert len(study.trials) == 3 and "param.a" not in study.trials[2].params  # conditional: absent, not NaN


def test_best_trial_and_its_export_yaml(cache):
    assert q.best_trial_id(cache.trials(), "acc") == "t2"
    assert q.best_trial_id(cache.trials(), "acc", "min") == "t1"  # completed trials before stopped ones
    text = q.export_yaml(cache.trials(), "t2", cache.root, "acc")
    assert text.startswith("# trial t2 of ") and "final acc 65.0%" in text.splitlines()[0]
    import yaml

    doc = yaml.safe_load(text)
    assert doc["name"] == "known-best" and doc["loss"]["contrastive"] == "psc" and doc["loss"]["temperature"] == 0.5


def test_refresh_reads_only_new_files_and_follows_a_running_trial(cache, monkeypatch):
    read = []
    real = q.read_table_file
    monkeypatch.setattr(q, "read_table_file", lambda loc, table: read.append(loc.name) or real(loc, table))
    cache.last_per_class()
    assert len(read) == 3  # each trial's last per_class file, once
    read.clear()
    cache.last_per_class()
    assert not cache.refresh() and cache.version == 1 and read == []
    write_known_trial(cache.root, "t4", {"loss.temperature": 0.3, "loss.contrastive": "psc"}, [[0.5] * 4],
                      with_row=False)
    assert cache.refresh() and cache.version == 2
    running = cache.trials().set_index("trial_id").loc["t4"]
    assert running["status"] == "running" and running["epochs_done"] == 1 and running["final_acc"] == 0.5
    assert sorted(read) == ["t4-epoch-0001.parquet"]  # its epoch, for the running trial's summary
    read.clear()
    cache.last_per_class()
    assert read == ["t4-epoch-0001.parquet"]  # only t4's per_class file: the others are cached
    write_known_trial(cache.root, "t4", {"loss.temperature": 0.3, "loss.contrastive": "psc"},
                      [[0.5] * 4, [0.7] * 4])
    read.clear()
    assert cache.refresh()
    assert read == ["t4.parquet"]  # a finished trial's epochs wait until a chart asks for them
    assert cache.trials().set_index("trial_id").loc["t4", "status"] == "completed"
    assert cache.epochs(["t4"])["acc"].tolist() == [0.5, 0.7]
    assert sorted(read) == ["t4-epoch-0001.parquet", "t4-epoch-0002.parquet", "t4.parquet"]  # epoch 1 rewritten


def test_running_trials_stay_out_of_what_drives_accuracy(cache):
    write_known_trial(cache.root, "t8", {"loss.temperature": 0.3, "loss.contrastive": "psc"}, [[0.5] * 4],
                      with_row=False)
    cache.refresh()
    trials = cache.trials()
    assert "t8" in set(trials.trial_id) and "t8" not in set(q.finished_trials(trials).trial_id)
    found, _ = q.param_importance(trials, "acc")  # the running trial's unknown params would empty it
    assert set(found) == {"param.loss.temperature", "param.loss.contrastive"}


def test_half_written_and_foreign_files_are_skipped_with_a_warning(cache):
    good = (cache.root / "trials" / "t1.parquet").read_bytes()
    (cache.root / "trials" / "half.parquet").write_bytes(good[: len(good) // 2])
    pq.write_table(pa.table({"x": [1]}), f"{cache.root.path}/per_class/t9-epoch-0001.parquet")
    pq.write_table(pa.table({"x": [1]}), f"{cache.root.path}/epochs/notes.parquet")
    with pytest.warns(UserWarning) as caught:
        assert cache.refresh()
        per_class = cache.last_per_class()
    text = "\n".join(str(w.message) for w in caught)
    assert "half.parquet: not a readable Parquet file" in text
    assert "t9-epoch-0001.parquet: not a hybridlt per_class file" in text
    assert "notes.parquet: not a hybridlt epochs file name" in text
    assert sorted(cache.trials()["trial_id"]) == ["t1", "t2", "t3"] and sorted(per_class) == ["t1", "t2", "t3"]


def test_a_trial_without_per_class_rows(cache):
    write_known_trial(cache.root, "t5", {"loss.temperature": 0.2, "loss.contrastive": "sc"},
                      [[0.3] * 4, [0.9] * 4], with_per_class=False)
    cache.refresh()
    assert "t5" in set(cache.trials()["trial_id"]) and "t5" not in cache.last_per_class()
    m = q.class_matrix(cache.last_per_class(["t5", "t1"]), ["t5", "t1"])
    assert m.trial_ids == ["t1"]
    assert q.class_matrix({}, ["t5"]).acc.shape == (0, 0)
    assert q.class_curves({}, ["t5"]).empty


def test_missing_and_empty_stores(tmp_path):
    c = q.ResultsCache(tmp_path / "nothing")
    assert not c.refresh() and "No results yet" in c.message and c.trials().empty
    (tmp_path / "empty" / "results" / "trials").mkdir(parents=True)
    c = q.ResultsCache(tmp_path / "empty")  # the sweep folder: its results/ is found
    c.refresh()
    assert c.root.name == "results" and "holds no trials yet" in c.message and c.trials().empty
    assert c.last_per_class() == {} and c.epochs(["x"]).empty


def test_cache_on_a_non_local_filesystem(tmp_path):
    """Everything goes through Location: fsspec's in-memory filesystem stands in for s3://."""
    fs = pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem("memory")))
    root = Location(fs, f"/dash-{tmp_path.name}/results")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        known_store_at(root)
    c = q.ResultsCache(root)
    assert c.refresh() and sorted(c.trials()["trial_id"]) == ["t1", "t2", "t3"]
    assert q.class_matrix(c.last_per_class(), ["t1"]).names == ["c", "b", "d", "a"]


def known_store_at(root: Location) -> None:
    from dashstores import PARAM_TYPES, base_config, sweep_doc

    from hybridlt.sweep.results import ResultsWriter

    ResultsWriter(root).sweep_yaml(sweep_doc(), base_config(), PARAM_TYPES)
    for tid, (params, epochs) in KNOWN.items():
        write_known_trial(root, tid, params, epochs)
