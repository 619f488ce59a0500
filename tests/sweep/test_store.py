"""The results store on local disk and on a non-local pyarrow filesystem (fsspec's in-memory one
standing in for s3://): atomic files, readers that skip what is not ours, the Pareto front."""

from __future__ import annotations

import fsspec
import pyarrow.fs as pafs
import pytest

from hybridlt.sweep.results import ResultsWriter, open_store, pareto_front, read_dataset, trial_summary, trials_schema
from hybridlt.sweep.store import Location


def _metrics(epoch, acc):
    return {"epoch": epoch, "loss": 1.0 / epoch, "con_loss": None, "ce_loss": 0.5, "alpha": 0.5, "lr": 0.1,
            "acc": acc, "balanced_acc": acc, "many_acc": 0.9, "medium_acc": None, "few_acc": 0.1,
            "per_class_acc": [acc, float("nan")]}


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path):
    if request.param == "local":
        return Location.of(tmp_path / "results")
    fs = pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem("memory")))
    return Location(fs, f"/store-{tmp_path.name}/results")


def test_writer_and_readers_round_trip(root):
    writer = ResultsWriter(root)
    for epoch, acc in ((1, 0.5), (2, 0.7)):
        writer.epoch("t1", _metrics(epoch, acc), ["a", "b"], [10, 2])
    epochs = read_dataset(root, "epochs").to_pandas().sort_values("epoch")
    assert epochs.acc.tolist() == [0.5, 0.7] and epochs.medium_acc.isna().all()
    per_class = read_dataset(root, "per_class").to_pandas()
    assert len(per_class) == 4 and per_class.accuracy.isna().sum() == 2  # NaN per-class acc stored as null
    schema = trials_schema({"loss.temperature": __import__("pyarrow").float64()})
    writer.trial({"trial_id": "t1", "status": "completed", "param.loss.temperature": 0.2,
                  **trial_summary(epochs.to_dict("records"))}, schema)
    trials = read_dataset(root, "trials").to_pandas()
    assert trials.loc[0, "best_acc"] == 0.7 and trials.loc[0, "best_epoch"] == 2 and trials.loc[0, "epochs_done"] == 2
    assert [loc.name for loc in (root / "epochs").files()] == ["t1-epoch-0001.parquet", "t1-epoch-0002.parquet"]


def test_readers_skip_foreign_and_half_written_files(root):
    ResultsWriter(root).epoch("t1", _metrics(1, 0.5), ["a", "b"], [10, 2])
    (root / "epochs" / "garbage.parquet").write_bytes(b"PAR1 not really")
    import pyarrow as pa

    from hybridlt.sweep.store import write_table_atomic

    write_table_atomic(pa.table({"x": [1]}), root / "epochs" / "foreign.parquet")
    (root / "epochs" / ".t2-epoch-0001.parquet.tmp").write_bytes(b"half")  # a writer's temp file
    with pytest.warns(UserWarning, match="skipping") as caught:
        epochs = read_dataset(root, "epochs")
    assert epochs.num_rows == 1
    messages = " ".join(str(w.message) for w in caught)
    assert len(caught) == 2 and "garbage.parquet" in messages and "foreign.parquet" in messages


def test_no_temp_files_left_locally(tmp_path):
    root = Location.of(tmp_path / "r")
    ResultsWriter(root).epoch("t1", _metrics(1, 0.5), ["a", "b"], [10, 2])
    assert not list(tmp_path.rglob(".*"))


def test_open_store_names_a_bad_path(tmp_path):
    from hybridlt.sweep.results import StoreError

    with pytest.raises(StoreError, match="not a hybridlt results store"):
        open_store(tmp_path / "nothing")
    ResultsWriter(tmp_path / "sw" / "results").sweep_yaml({}, {}, {})
    assert open_store(tmp_path / "sw").path.endswith("/sw/results")


def test_pareto_front_by_hand():
    points = [("a", [0.9, 0.1]), ("b", [0.8, 0.5]), ("c", [0.7, 0.4]), ("d", [0.9, 0.1]), ("e", [0.5, float("nan")])]
    assert pareto_front(points, ["max", "max"]) == ["a", "b", "d"]  # c is dominated by b; ties both stay
    assert pareto_front(points, ["min", "max"]) == ["b", "c"]


def test_objective_direction_comes_from_the_metric_catalogue():
    from hybridlt.sweep.results import best_trial, sweep_objective, trial_summary

    assert sweep_objective({"spec": {"objective": {"metric": "loss", "mode": None}}}) == (["loss"], ["min"])
    assert sweep_objective({"spec": {"objective": {"metric": ["acc", "ce_loss"]}}}) == (["acc", "ce_loss"],
                                                                                       ["max", "min"])
    rows = [{"epoch": 1, "acc": 0.5, "loss": 2.0}, {"epoch": 2, "acc": 0.7, "loss": 0.5},
            {"epoch": 3, "acc": 0.6, "loss": 0.9}]
    summary = trial_summary(rows)
    assert summary["best_loss"] == 0.5 and summary["final_loss"] == 0.9 and summary["best_acc"] == 0.7
    trials = [{"trial_id": "a", "status": "completed", "final_loss": 0.9},
              {"trial_id": "b", "status": "completed", "final_loss": 0.4}]
    metric, mode = sweep_objective({"spec": {"objective": {"metric": "loss"}}})
    assert best_trial(trials, metric[0], mode[0])["trial_id"] == "b"


def test_a_schema_1_store_reads_with_todays_statuses(tmp_path):
    """Stores written before the statuses of schema 2: ``stopped`` (ASHA) reads as ``stopped_early`` at
    its last epoch; other statuses and schema-2 rows stay as written; best and export skip them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hybridlt.sweep.results import best_trial, read_dataset

    (tmp_path / "trials").mkdir()
    old = pa.table({"trial_id": ["a", "b", "c"], "status": ["completed", "stopped", "failed"],
                    "epochs_done": [8, 3, 1], "final_acc": [0.5, 0.9, None], "schema_version": [1, 1, 1]})
    pq.write_table(old, tmp_path / "trials" / "old.parquet")
    new = pa.table({"trial_id": ["d"], "status": ["stopped"], "epochs_done": [2], "final_acc": [0.95],
                    "schema_version": [2]})  # a schema-2 row is never rewritten, whatever it says
    pq.write_table(new, tmp_path / "trials" / "new.parquet")
    rows = {r["trial_id"]: r for r in read_dataset(tmp_path, "trials").to_pylist()}
    assert [rows[t]["status"] for t in "abcd"] == ["completed", "stopped_early", "failed", "stopped"]
    assert rows["b"]["stopped_epoch"] == 3 and rows["a"]["stopped_epoch"] is None
    assert best_trial(list(rows.values()), "acc", "max")["trial_id"] == "a"  # b stopped early: not comparable


def test_the_best_is_chosen_among_comparable_trials_only():
    """An honest best: never an interrupted, failed or running trial; ``common-epoch`` compares every
    finished trial at the latest epoch all of them reached (here 2), by hand."""
    from hybridlt.sweep.results import best_trial, rank_trials

    trials = [
        {"trial_id": "done", "status": "completed", "epochs_done": 4, "final_acc": 0.60},
        {"trial_id": "early", "status": "stopped_early", "epochs_done": 2, "final_acc": 0.55},
        {"trial_id": "cut", "status": "interrupted", "epochs_done": 3, "final_acc": 0.99},
        {"trial_id": "nan", "status": "failed", "epochs_done": 1, "final_acc": 0.98},
        {"trial_id": "done2", "status": "completed", "epochs_done": 4, "final_acc": 0.58},
    ]
    epochs = [{"trial_id": t, "epoch": e, "acc": a} for t, e, a in [
        ("done", 2, 0.40), ("early", 2, 0.55), ("done2", 2, 0.45), ("cut", 2, 0.9), ("done", 4, 0.6)]]
    best = best_trial(trials, "acc", "max")
    assert best["trial_id"] == "done" and "among completed trials (2 of 5)" in best["_rule"]
    ranked, why = rank_trials(trials, "acc", "max", "common-epoch", epochs)
    assert [t["trial_id"] for t in ranked] == ["early", "done2", "done"] and "epoch 2" in why
    assert best_trial(trials, "acc", "min")["trial_id"] == "done2"
    assert best_trial([trials[2], trials[3]], "acc", "max") is None  # nothing comparable: nothing exported


def test_a_tie_goes_to_the_smaller_trial_id_whatever_the_order():
    from hybridlt.sweep.results import best_trial

    rows = [{"trial_id": t, "status": "completed", "final_acc": 0.13, "epochs_done": 3} for t in ("94b", "38e", "cc1")]
    for order in (rows, rows[::-1], rows[1:] + rows[:1]):
        assert best_trial(order, "acc", "max")["trial_id"] == "38e"
        assert best_trial([{**r, "final_loss": 1.0} for r in order], "loss", "min")["trial_id"] == "38e"
