"""The sweep results store: ``<storage>/<name>/results/{trials,epochs,per_class}/`` Parquet datasets.

``trials``: one file per trial with its status (``STATUSES``): written once when the trial
ends (completed, stopped early, failed); an ``interrupted`` row (the driver, a worker or a node
went away) is replaced when ``--resume`` finishes the trial. ``epochs`` and ``per_class``: one
file per trial and epoch, written by the trial's rank 0 as it reports (a re-run epoch after a
restart replaces its own file atomically). ``configs/<trial>.yaml``: what the trial trained
with, recorded by its rank 0 (parameters, resolved config, the built losses' settings).
``sweep.yaml`` holds the spec and the resolved base config; ``pareto.parquet`` the
non-dominated trials of a multi-objective sweep. Readable with pyarrow, pandas or DuckDB.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from hybridlt.errors import InputError, OutputExistsError
from hybridlt.sweep.metrics import ACCURACY_METRICS, EPOCH_METRICS, FINAL_METRICS, METRICS
from hybridlt.sweep.store import (
    EPOCH_SCHEMA,
    NOTES_DIR,
    PER_CLASS_SCHEMA,
    SCHEMA_VERSION,
    SWEEP_YAML,
    Location,
    epoch_file,
    epoch_table,
    list_parquet,
    note_file,
    per_class_table,
    trial_file,
    write_table_atomic,
    write_text_atomic,
)

STATUSES = {
    "completed": "ran every planned epoch",
    "stopped_early": "stopped by the scheduler (ASHA) or the time budget; stopped_epoch says when",
    "interrupted": "the driver, a worker or a node went away; --resume finishes it",
    "failed": "raised an error (error: its last line), after resources.max_failures retries",
}
FINISHED = ("completed", "stopped_early", "failed")  # final: --resume never re-runs these
RANK_RULES = ("completed", "common-epoch")
GROUP_METRICS = ACCURACY_METRICS
TRIAL_FIXED = [
    ("trial_id", pa.string()), ("status", pa.string()), ("error", pa.string()), ("epochs_done", pa.int32()),
    ("epochs_planned", pa.int32()), ("wall_time_s", pa.float64()),
    *[(f"final_{m}", pa.float64()) for m in FINAL_METRICS],
    *[(f"best_{m}", pa.float64()) for m in FINAL_METRICS], ("best_epoch", pa.int32()),
    ("config_yaml", pa.string()), ("schema_version", pa.int32()), ("stopped_epoch", pa.int32()),
]
TABLES = {"epochs": EPOCH_SCHEMA, "per_class": PER_CLASS_SCHEMA}


class StoreError(InputError):
    """A results path that is not a hybridlt store; the message names it."""


def param_type(values) -> pa.DataType:
    """The Arrow type of a searched parameter's column, from the values its distribution allows."""
    vals = [v for v in values if v is not None]
    if vals and all(isinstance(v, bool) for v in vals):
        return pa.bool_()
    if vals and all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        return pa.int64()
    if vals and all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
        return pa.float64()
    return pa.string()


def trials_schema(param_types: dict[str, pa.DataType]) -> pa.Schema:
    fields = [pa.field(n, t) for n, t in TRIAL_FIXED]
    fields += [pa.field(f"param.{path}", t) for path, t in param_types.items()]
    return pa.schema(fields).with_metadata({"hybridlt_schema_version": str(SCHEMA_VERSION)})


def _cast(value, typ: pa.DataType):
    if value is None:
        return None
    if typ == pa.string():
        return value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
    if typ == pa.float64():
        return float(value)
    return value


class ResultsWriter:
    """Writes one trial's rows under ``results/``; used from the trial's rank 0 and the driver."""

    def __init__(self, root: str | Path | Location):
        self.root = Location.of(root)

    def epoch(self, trial_id: str, metrics: dict, class_names, counts) -> None:
        epoch = metrics["epoch"]
        write_table_atomic(epoch_table(trial_id, metrics), epoch_file(self.root, "epochs", trial_id, epoch))
        if "per_class_acc" in metrics:  # an epoch without evaluation (train.eval_every) has none
            write_table_atomic(per_class_table(trial_id, metrics, class_names, counts),
                               epoch_file(self.root, "per_class", trial_id, epoch))

    def trial(self, row: dict, schema: pa.Schema) -> None:
        clean = {f.name: _cast(row.get(f.name), f.type) for f in schema}
        clean["schema_version"] = SCHEMA_VERSION
        write_table_atomic(pa.Table.from_pylist([clean], schema=schema), trial_file(self.root, row["trial_id"]))

    def sweep_yaml(self, spec_dump: dict, base_dump: dict, param_types: dict[str, pa.DataType]) -> None:
        doc = {"schema_version": SCHEMA_VERSION, "spec": spec_dump, "base": base_dump,
               "params": {k: str(v) for k, v in param_types.items()}}
        write_text_atomic(yaml.safe_dump(doc, sort_keys=False), self.root / SWEEP_YAML)


REQUIRED = {"trials": {"trial_id", "status"}, "epochs": {"trial_id", "epoch"},
            "per_class": {"trial_id", "class_index", "train_count", "accuracy"}, "pareto": {"trial_id"}}


def conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """``data`` with exactly ``schema``'s columns: missing ones null, others cast."""
    cols = [data.column(f.name).cast(f.type) if f.name in data.schema.names else pa.nulls(data.num_rows, f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def read_table_file(loc: Location, table: str) -> pa.Table | None:
    """One Parquet file of ``table``, or None (with a warning naming it) when it is unreadable or not ours."""
    try:
        with loc.fs.open_input_file(loc.path) as f:
            data = pq.ParquetFile(f).read(use_threads=False)
    except (pa.ArrowInvalid, OSError) as exc:
        warnings.warn(f"results store: skipping {loc}: not a readable Parquet file ({exc})", stacklevel=2)
        return None
    version = (data.schema.metadata or {}).get(b"hybridlt_schema_version")
    if version is not None and (not version.isdigit() or int(version) > SCHEMA_VERSION):
        raise StoreError(f"results store: {loc}: written by store schema version {version.decode(errors='replace')}; "
                         f"this hybridlt reads versions up to {SCHEMA_VERSION}: upgrade hybridlt to read it")
    missing = REQUIRED[table] - set(data.schema.names)
    if missing:
        warnings.warn(f"results store: skipping {loc}: not a hybridlt {table} file "
                      f"(no {', '.join(sorted(missing))} column)", stacklevel=2)
        return None
    if table == "trials":
        data = upgrade_trials(data)
    schema = TABLES.get(table)
    return data if schema is None else conform(data, schema)


def upgrade_trials(data: pa.Table) -> pa.Table:
    """Trials rows of schema 1 read as schema 2: ``stopped`` is ``stopped_early`` at its last epoch."""
    version = data.column("schema_version").to_pylist() if "schema_version" in data.schema.names else None
    if version is not None and all(v is not None and v >= 2 for v in version):
        return data
    old = [v is None or v < 2 for v in (version or [None] * data.num_rows)]
    status = [("stopped_early" if s == "stopped" and o else s) for s, o in zip(data.column("status").to_pylist(), old,
                                                                               strict=True)]
    data = data.set_column(data.schema.get_field_index("status"), "status", pa.array(status, pa.string()))
    if "stopped_epoch" not in data.schema.names and "epochs_done" in data.schema.names:
        stopped = [e if s == "stopped_early" else None for s, e in zip(status, data.column("epochs_done").to_pylist(),
                                                                         strict=True)]
        data = data.append_column("stopped_epoch", pa.array(stopped, pa.int32()))
    return data


def read_dataset(root: str | Path | Location, table: str, name_prefix: str = "") -> pa.Table | None:
    """A table of a results store, skipping (with a warning) files that are not ours or not whole.

    ``name_prefix`` reads only the files whose names start with it (``"<trial_id>-epoch-"``: one trial).
    """
    folder = Location.of(root) / table
    parts = [read_table_file(folder / name, table) for name in sorted(list_parquet(folder))
             if name.startswith(name_prefix)]
    parts = [p for p in parts if p is not None]
    try:
        return pa.concat_tables(parts, promote_options="default") if parts else None
    except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        raise StoreError(f"results store: {folder}: its files disagree on column types ({exc}); "
                         f"allowed: files of one sweep, as hybridlt wrote them") from None


def read_sweep_doc(root: Location) -> dict:
    """``sweep.yaml`` of a store as a mapping (empty when absent); a broken one is a ``StoreError``."""
    loc = root / SWEEP_YAML
    if not loc.exists():
        return {}
    try:
        doc = yaml.safe_load(loc.read_bytes())
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"{loc}: not readable YAML ({str(exc).splitlines()[0]})") from None
    if doc is not None and not isinstance(doc, dict):
        raise StoreError(f"{loc}: expected a mapping, got {type(doc).__name__}")
    version = (doc or {}).get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION:
        raise StoreError(f"{loc}: schema_version {version!r} was written by a newer hybridlt; this one reads "
                         f"schema versions 1 .. {SCHEMA_VERSION}: upgrade hybridlt to read it")
    return doc or {}


def write_note(root, trial_id: str, note: str, tags: list[str]) -> dict:
    """Save a trial's note and tags as ``notes/<trial_id>.json``, atomically (a reader sees the old or the new)."""
    if not trial_id or "/" in trial_id or trial_id.startswith("."):
        raise StoreError(f"trial_id: {trial_id!r} is not a trial of this store")
    doc = {"trial_id": trial_id, "note": note.strip(), "tags": sorted({t.strip() for t in tags if t.strip()}),
           "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    note_file(Location.of(root), trial_id).write_bytes(json.dumps(doc, indent=1).encode())
    return doc


def read_notes(root) -> dict[str, dict]:
    """Every trial's note and tags, by trial id; an unreadable file is skipped with a warning."""
    out = {}
    for loc in (Location.of(root) / NOTES_DIR).files(".json"):
        try:
            doc = json.loads(loc.read_bytes())
            out[str(doc["trial_id"])] = {"note": str(doc.get("note", "")), "tags": list(doc.get("tags") or [])}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warnings.warn(f"results store: skipping {loc}: not a note file ({exc})", stacklevel=2)
    return out


def has_trial_row(root, trial_id: str) -> bool:
    """Whether the trial's row is written (it finished, once)."""
    return trial_file(Location.of(root), trial_id).exists()


def open_store(where: str | Path) -> Location:
    """The ``results`` folder for a path given by a user: the folder itself, the sweep folder above it,
    or a run directory of ``hybridlt train``."""
    base = Location.of(where)
    for candidate in (base, base / "results"):
        if (candidate / SWEEP_YAML).exists() or (candidate / "trials").is_dir():
            read_sweep_doc(candidate)  # a broken or newer sweep.yaml is said here, not half-read later
            return candidate
    if (base / "epochs").is_dir():  # a run directory of ``hybridlt train``
        return base
    raise StoreError(f"RESULTS: {where} is not a hybridlt results store (no sweep.yaml, trials/ or epochs/ inside)")


def trial_summary(epochs: list[dict] | None) -> dict:
    """Final and best metrics of one trial from its epoch rows (sorted by epoch)."""
    if not epochs:
        return {"epochs_done": 0}
    last = epochs[-1]
    best = max(epochs, key=lambda r: -math.inf if r.get("acc") is None else r["acc"])
    out = {"epochs_done": int(last["epoch"]), "best_epoch": int(best["epoch"])}
    for m in FINAL_METRICS:
        values = [r[m] for r in epochs if r.get(m) is not None and r[m] == r[m]]
        out[f"final_{m}"] = last.get(m)
        out[f"best_{m}"] = (min if METRICS[m].direction == "min" else max)(values, default=None)
    return out


def pareto_front(points: list[tuple[str, list[float]]], modes: list[str]) -> list[str]:
    """Ids of the non-dominated points (each objective maximised or minimised per ``modes``)."""
    signs = [1 if m == "max" else -1 for m in modes]
    scored = [(tid, [s * v for s, v in zip(signs, vals, strict=True)]) for tid, vals in points
              if all(v is not None and not math.isnan(v) for v in vals)]
    front = []
    for tid, a in scored:
        dominated = any(all(x >= y for x, y in zip(b, a, strict=True)) and any(x > y for x, y in zip(b, a, strict=True))
                        for _, b in scored)
        if not dominated:
            front.append(tid)
    return front


def sweep_objective(sweep_doc: dict) -> tuple[list[str], list[str]]:
    """The objective metrics and modes recorded in ``sweep.yaml`` (``acc`` / ``max`` when unknown)."""
    obj = (sweep_doc.get("spec") or {}).get("objective") or {}
    metrics, modes = obj.get("metric") or "acc", obj.get("mode")
    metrics = metrics if isinstance(metrics, list) else [metrics]
    if isinstance(modes, list):
        return metrics, modes
    return metrics, [modes or (METRICS[m].direction if m in METRICS else "max") for m in metrics]


def rank_trials(trials: list[dict], metric: str, mode: str, rule: str = "completed",
                epochs: list[dict] | None = None) -> tuple[list[dict], str]:
    """The comparable trials, best first, and the rule that ranked them (in words).

    ``completed`` (default): by the final ``metric`` of completed trials only. ``common-epoch``:
    every finished trial (completed or stopped early) by its ``metric`` at the latest epoch all of
    them reached (needs ``epochs``; each row gets ``_value``, its value there). Interrupted, failed
    or running trials are never ranked.
    """
    if rule not in RANK_RULES:
        raise ValueError(f"rule: {rule!r}; allowed: {RANK_RULES}")
    sign = 1 if mode == "max" else -1
    if rule == "completed":
        key = f"final_{metric}"
        pool = [{**t, "_value": None} for t in trials
                if t["status"] == "completed" and t.get(key) is not None and t[key] == t[key]]
        pool.sort(key=lambda t: (-sign * t[key], t["trial_id"]))  # a tie: the smaller trial id, as the progress line
        return pool, f"final {metric} among completed trials ({len(pool)} of {len(trials)})"
    finished = [t for t in trials if t["status"] in ("completed", "stopped_early") and (t.get("epochs_done") or 0) > 0]
    if not finished:
        return [], f"{metric} at the latest epoch every finished trial reached (none finished)"
    common = min(t["epochs_done"] for t in finished)
    at = {r["trial_id"]: r.get(metric) for r in epochs or [] if r["epoch"] == common}
    pool = [{**t, "_value": at[t["trial_id"]]} for t in finished
            if at.get(t["trial_id"]) is not None and at[t["trial_id"]] == at[t["trial_id"]]]
    pool.sort(key=lambda t: (-sign * t["_value"], t["trial_id"]))
    return pool, (f"{metric} at epoch {common}, the latest epoch every finished trial reached "
                  f"({len(pool)} of {len(trials)} trials)")


def all_failed(rows: list[dict]) -> str | None:
    """``all N trials failed (first: <its error>)`` when every trial row failed, else None."""
    if not rows or any(t["status"] != "failed" for t in rows):
        return None
    first = next((t["error"] for t in rows if t.get("error")), "no error recorded")
    return f"all {len(rows)} trials failed (first: {first})"


def best_trial(trials: list[dict], metric: str, mode: str, rule: str = "completed",
               epochs: list[dict] | None = None) -> dict | None:
    """The best trial row among comparable ones (``rank_trials``), with ``_rule`` saying how it was chosen."""
    ranked, why = rank_trials(trials, metric, mode, rule, epochs)
    return {**ranked[0], "_rule": why} if ranked else None


def export_best(results, output, metric: str | None = None, mode: str | None = None, force: bool = False,
                rule: str = "completed") -> dict:
    """Write the best trial's run config to ``output`` (refusing to overwrite unless ``force``).

    Returns the trial's row, with ``_metric`` naming the metric and ``_rule`` the rule it was chosen by.
    """
    from hybridlt.sweep.config import ConfigError

    root = open_store(results)
    allowed = EPOCH_METRICS if rule == "common-epoch" else FINAL_METRICS  # common-epoch reads the epochs table
    if metric is not None and metric not in allowed:
        hint = "; it is an epoch metric: --rank-by common-epoch ranks by it" if metric in EPOCH_METRICS else ""
        raise ConfigError(f"--metric: {metric!r} is not a metric of the store (--rank-by {rule}); allowed: "
                          f"{', '.join(allowed)}{hint}")
    trials = read_dataset(root, "trials")
    if trials is None or trials.num_rows == 0:
        if not (root / SWEEP_YAML).exists() and (root / "config.yaml").exists():
            raise ConfigError(f"RESULTS: {root} is the run directory of one 'hybridlt train', not a sweep's "
                              f"results; its config is {root / 'config.yaml'}")
        raise ConfigError(f"RESULTS: {root} holds no finished trial yet")
    metrics, modes = sweep_objective(read_sweep_doc(root))
    metric, mode = metric or metrics[0], mode or modes[0]
    epochs = read_dataset(root, "epochs") if rule == "common-epoch" else None
    rows = trials.to_pylist()
    best = best_trial(rows, metric, mode, rule, epochs.to_pylist() if epochs is not None else None)
    if best is None:
        failed = all_failed(rows)
        if failed:
            raise ConfigError(f"RESULTS: {root}: {failed}; nothing to export")
        none_completed = not any(t["status"] == "completed" for t in rows)
        hint = (" (none completed yet: --rank-by common-epoch ranks stopped-early trials too)"
                if rule == "completed" and none_completed else "")
        raise ConfigError(f"--metric: no trial reported {metric!r}{hint}")
    out = check_export_target(output, force)
    from hybridlt.sweep.faults import pause_at

    text = exported_config(best, root, metric)
    pause_at("export")
    write_export(text, out)
    return {**best, "_metric": metric}


def check_export_target(output, force: bool) -> Path:
    """``-o``: a file path, not overwritten unless ``force`` (checked before any work is done)."""
    out = Path(output)
    if out.is_dir():
        raise InputError(f"-o: {out} is a folder; allowed: a file path")
    if out.exists() and not force:
        raise OutputExistsError(f"-o: {out} exists; pass --force to overwrite it")
    return out


def write_export(text: str, out: Path) -> None:
    """Write an exported config atomically; an unwritable target is one line."""
    try:
        write_text_atomic(text, out)
    except OSError as exc:
        raise InputError(f"-o: {out}: cannot be written ({exc.strerror or exc}); "
                         f"allowed: a writable file path") from None


def exported_config(row: dict, root, metric: str, header: str | None = None) -> str:
    """What ``hybridlt export-best`` writes for a trial row: a comment line, then its resolved run
    config named ``<name>-best``, ready for ``hybridlt train --config``.

    The stored config was validated when the trial trained with it; ``hybridlt train`` validates the
    file again, so this needs no config models (the dashboard exports without importing torch).
    """
    text = row.get("config_yaml")
    try:
        cfg = yaml.safe_load(text) if isinstance(text, str) and text else None
    except yaml.YAMLError:
        cfg = None
    if not isinstance(cfg, dict):
        raise StoreError(f"trial {row['trial_id']}: no readable resolved config was stored (config_yaml)")
    cfg["name"] = f"{cfg.get('name', 'run')}-best"
    value = row.get(f"final_{metric}")
    shown = "-" if value is None or value != value else f"{100 * value:.1f}"
    rule = f"; chosen by {row['_rule']}" if row.get("_rule") else ""
    first = header or f"# trial {row['trial_id']} of {root}: final {metric} {shown}%{rule}"
    threads = (cfg.get("train") or {}).get("threads")
    if threads is not None:  # recorded by the trial: float sums differ between thread counts
        first += (f"\n# train.threads: {threads}, as the trial ran: the same numbers on the same machine "
                  f"(--set train.threads=null: torch's default)")
    return first + "\n" + yaml.safe_dump(cfg, sort_keys=False)
