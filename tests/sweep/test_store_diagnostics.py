"""The long-tail diagnostics' store columns: written from the trainer's metrics, null in older stores."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hybridlt.sweep.metrics import METRICS
from hybridlt.sweep.results import ResultsWriter, read_dataset, read_table_file
from hybridlt.sweep.store import EPOCH_SCHEMA, PER_CLASS_SCHEMA, Location


def test_diagnostics_are_in_the_catalogue_and_the_epoch_schema():
    for name in ("la_acc", "taunorm_acc", "la_few_acc", "confusion_few_to_many", "confusion_many_to_many"):
        assert name in METRICS and name in EPOCH_SCHEMA.names
    assert {"weight_norm", "la_accuracy", "taunorm_accuracy"} <= set(PER_CLASS_SCHEMA.names)


def test_written_diagnostics_read_back(tmp_path):
    metrics = {"epoch": 1, "acc": 0.5, "la_acc": 0.55, "confusion_few_to_many": 0.25,
               "per_class_acc": [0.5, 0.25], "per_class_weight_norm": [2.0, 0.5], "per_class_la_acc": [0.4, 0.5],
               "per_class_taunorm_acc": [0.45, 0.3]}
    ResultsWriter(tmp_path).epoch("t1", metrics, ["a", "b"], [10, 2])
    row = read_dataset(tmp_path, "epochs").to_pylist()[0]
    assert row["la_acc"] == 0.55 and row["confusion_few_to_many"] == 0.25 and row["taunorm_acc"] is None
    per_class = read_dataset(tmp_path, "per_class").to_pydict()
    assert per_class["weight_norm"] == [2.0, 0.5] and per_class["la_accuracy"] == [0.4, 0.5]


def test_an_older_store_without_the_columns_still_reads(tmp_path):
    old_epoch = pa.table({"trial_id": ["t1"], "epoch": pa.array([1], pa.int32()), "acc": [0.5]})
    old_class = pa.table({"trial_id": ["t1"] * 2, "epoch": pa.array([1, 1], pa.int32()),
                          "class_index": pa.array([0, 1], pa.int32()), "class_name": ["a", "b"],
                          "train_count": [10, 2], "accuracy": [0.5, 0.25]})
    (tmp_path / "epochs").mkdir()
    (tmp_path / "per_class").mkdir()
    pq.write_table(old_epoch, tmp_path / "epochs" / "t1-epoch-0001.parquet")
    pq.write_table(old_class, tmp_path / "per_class" / "t1-epoch-0001.parquet")
    epoch = read_table_file(Location.of(tmp_path / "epochs" / "t1-epoch-0001.parquet"), "epochs")
    assert epoch.schema == EPOCH_SCHEMA and epoch.column("la_acc").to_pylist() == [None]
    per_class = read_table_file(Location.of(tmp_path / "per_class" / "t1-epoch-0001.parquet"), "per_class")
    assert per_class.column("weight_norm").to_pylist() == [None, None]
    assert per_class.column("accuracy").to_pylist() == pytest.approx([0.5, 0.25])
