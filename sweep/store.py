"""Parquet tables of per-epoch and per-class results, each file written atomically.

A table is a directory of Parquet files, one per write (``<trial_id>-epoch-0001.parquet`` ...), never
rewritten in place: ``pyarrow.dataset.dataset(dir)``, pandas and DuckDB read it whole.
Files starting with ``.`` are temporary and invisible to those readers. ``Location`` writes them
on a local disk or any pyarrow filesystem (``s3://``).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from hybridlt.errors import InputError
from hybridlt.sweep.metrics import EPOCH_METRICS

SCHEMA_VERSION = 2  # 2: statuses completed | stopped_early | interrupted | failed (1: "stopped")

EPOCH_SCHEMA = pa.schema([("trial_id", pa.string()), ("epoch", pa.int32()),
                          *[(name, pa.float64()) for name in EPOCH_METRICS]])
# per-class diagnostics (model.evaluate.diagnostics_report); stores written before them read null
DIAGNOSTIC_CLASS_COLUMNS = {"weight_norm": "per_class_weight_norm", "la_accuracy": "per_class_la_acc",
                            "taunorm_accuracy": "per_class_taunorm_acc"}  # column -> metrics key

PER_CLASS_SCHEMA = pa.schema([
    ("trial_id", pa.string()), ("epoch", pa.int32()), ("class_index", pa.int32()),
    ("class_name", pa.string()), ("train_count", pa.int64()), ("accuracy", pa.float64()),
    *[(name, pa.float64()) for name in DIAGNOSTIC_CLASS_COLUMNS],
])


# The layout of a results store, in one place:
#   trials/<trial_id>.parquet                    one row per finished trial, written once
#   epochs/<trial_id>-epoch-NNNN.parquet         one row per trial and epoch
#   per_class/<trial_id>-epoch-NNNN.parquet      one row per class, trial and epoch
#   sweep.yaml                                   the spec, the resolved base config, parameter types
#   pareto.parquet                               the non-dominated trials of a multi-objective sweep
#   notes/<trial_id>.json                        a person's note and tags on a trial (the dashboard's)
TABLE_NAMES = ("trials", "epochs", "per_class")
SWEEP_YAML = "sweep.yaml"
PARETO_FILE = "pareto.parquet"
EPOCH_FILE = re.compile(r"^(?P<trial>.+)-epoch-(?P<epoch>\d+)\.parquet$")


def trial_file(root: Location, trial_id: str) -> Location:
    return root / "trials" / f"{trial_id}.parquet"


NOTES_DIR = "notes"


def note_file(root: Location, trial_id: str) -> Location:
    return root / NOTES_DIR / f"{trial_id}.json"


def epoch_file(root: Location, table: str, trial_id: str, epoch: int) -> Location:
    return root / table / f"{trial_id}-epoch-{epoch:04d}.parquet"


def epoch_prefix(trial_id: str) -> str:
    """The start of every ``epochs``/``per_class`` file name of one trial."""
    return f"{trial_id}-epoch-"


def is_visible(name: str) -> bool:
    """Files starting with '.' (temp files being written) or '_' are not part of a table."""
    return not name.startswith((".", "_"))


def list_parquet(folder: Location) -> dict[str, tuple[int, int]]:
    """Visible ``.parquet`` files directly inside ``folder``: name -> (size, mtime in ns); one listing call."""
    try:
        infos = folder.fs.get_file_info(pafs.FileSelector(folder.path, recursive=False, allow_not_found=True))
    except (OSError, pa.ArrowInvalid):
        return {}
    return {i.base_name: (i.size, i.mtime_ns or 0) for i in infos
            if i.type == pafs.FileType.File and i.base_name.endswith(".parquet") and is_visible(i.base_name)}


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
        **{col: [_clean(v) for v in metrics.get(key) or [None] * n] for col, key in DIAGNOSTIC_CLASS_COLUMNS.items()},
    }, schema=PER_CLASS_SCHEMA)


class Location:
    """A file or folder on a pyarrow filesystem: a local path, or a URI such as ``s3://bucket/x``.

    Writes are atomic everywhere: locally a hidden temp file then a rename, on object stores one
    PUT (which a reader sees whole or not at all). Picklable, so trials on other nodes can use it.
    """

    def __init__(self, fs: pafs.FileSystem, path: str):
        self.fs, self.path = fs, path.rstrip("/") or "/"

    @classmethod
    def of(cls, where: str | Path | Location) -> Location:
        if isinstance(where, Location):
            return where
        text = str(where)
        if "://" in text:
            fs, path = pafs.FileSystem.from_uri(text)
            return cls(fs, path)
        return cls(pafs.LocalFileSystem(), str(Path(text).expanduser().resolve()))

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def __truediv__(self, name: str) -> Location:
        return Location(self.fs, f"{self.path}/{name}")

    def __str__(self) -> str:
        return self.path if self.is_local else f"{self.fs.type_name}://{self.path}"

    def __repr__(self) -> str:
        return f"Location({self})"

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.fs.get_file_info(self.path).type == pafs.FileType.Directory

    def files(self, suffix: str = "") -> list[Location]:
        """Visible files directly inside this folder (temp files start with '.'), sorted by name."""
        if not self.is_dir():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=False))
        return sorted((Location(self.fs, i.path) for i in infos
                       if i.type == pafs.FileType.File and i.base_name.endswith(suffix) and is_visible(i.base_name)),
                      key=lambda loc: loc.path)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def write_bytes(self, data: bytes) -> None:
        parent = self.path.rsplit("/", 1)[0]
        if not self.is_local:
            self.fs.create_dir(parent, recursive=True)
            with self.fs.open_output_stream(self.path) as f:
                f.write(data)
            return
        Path(parent).mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.name}.", suffix=".tmp", dir=parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def writable_folder(where: str | Path, field: str, create: bool = True) -> None:
    """Make sure the local folder ``where`` exists (created if ``create``) and that this process can
    write in it, before anything starts: an ``InputError`` naming ``field``, the path and the reason.

    Writing is proved with a probe file, created and removed, not with ``os.access``: that says yes
    to root whatever a folder's mode, and no answer is as true as a write on mounts, ACLs and NFS.
    """
    path = Path(where).expanduser().absolute()
    allowed = "allowed: a folder this user can write"
    try:
        if path.exists() and not path.is_dir():
            raise InputError(f"{field}: {path} is a file, not a folder; {allowed}")
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir():
            raise InputError(f"{field}: {path} cannot be created: {existing} is a file; {allowed}")
        if existing != path and not create:
            return
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{field}: {path} cannot be created ({exc.strerror or exc}); {allowed}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".hybridlt-write-check.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{field}: {path} is not writable ({exc.strerror or exc}); {allowed}") from None


def write_table_atomic(table: pa.Table, where: str | Path | Location) -> Location:
    """Write ``table`` as one Parquet file: readers see all of it or nothing."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    loc = Location.of(where)
    loc.write_bytes(sink.getvalue().to_pybytes())
    return loc


def write_text_atomic(text: str, where: str | Path | Location) -> Location:
    loc = Location.of(where)
    loc.write_bytes(text.encode())
    return loc
