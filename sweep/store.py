"""Parquet tables of per-epoch and per-class results, each file written atomically.

A table is a directory of Parquet files, one per write (``epoch-0001.parquet`` ...), never
rewritten in place: ``pyarrow.dataset.dataset(dir)``, pandas and DuckDB read it whole.
Files starting with ``.`` are temporary and invisible to those readers.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 1

EPOCH_SCHEMA = pa.schema([
    ("trial_id", pa.string()), ("epoch", pa.int32()), ("loss", pa.float64()), ("con_loss", pa.float64()),
    ("ce_loss", pa.float64()), ("alpha", pa.float64()), ("lr", pa.float64()), ("acc", pa.float64()),
    ("balanced_acc", pa.float64()), ("many_acc", pa.float64()), ("medium_acc", pa.float64()),
    ("few_acc", pa.float64()), ("epoch_time_s", pa.float64()), ("eval_time_s", pa.float64()),
    ("images_per_s", pa.float64()), ("data_wait_s", pa.float64()),
])

PER_CLASS_SCHEMA = pa.schema([
    ("trial_id", pa.string()), ("epoch", pa.int32()), ("class_index", pa.int32()),
    ("class_name", pa.string()), ("train_count", pa.int64()), ("accuracy", pa.float64()),
])


def _clean(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def epoch_table(trial_id: str, metrics: dict) -> pa.Table:
    row = {name: _clean(metrics.get(name)) for name in EPOCH_SCHEMA.names}
    row["trial_id"] = trial_id
    return pa.Table.from_pylist([row], schema=EPOCH_SCHEMA)


def per_class_table(trial_id: str, metrics: dict, class_names: Sequence[str],
                    train_counts: Sequence[int]) -> pa.Table:
    acc = metrics["per_class_acc"]
    n = len(acc)
    return pa.table({
        "trial_id": [trial_id] * n, "epoch": [metrics["epoch"]] * n, "class_index": list(range(n)),
        "class_name": list(class_names), "train_count": list(train_counts),
        "accuracy": [_clean(a) for a in acc],
    }, schema=PER_CLASS_SCHEMA)


def write_table_atomic(table: pa.Table, path: str | Path) -> Path:
    """Write ``table`` to ``path`` via a hidden temp file and a rename: readers see all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, metadata_collector=None)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(text: str, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_table(path: str | Path) -> pa.Table:
    """All complete Parquet files of a table directory (hidden temp files ignored)."""
    import pyarrow.dataset as ds

    return ds.dataset(str(path), format="parquet", ignore_prefixes=[".", "_"]).to_table()
