"""Store access for the dashboard: an incremental cache over the Parquet files, and server-side aggregation.

Nothing here knows about Dash or plotly: ``ResultsCache`` reads only files it has not read yet
(file names carry the trial and epoch), and the functions below turn what it holds into the
small frames the figures draw. Foreign or unreadable files are skipped with a warning, as
``sweep.results.read_dataset`` does; every path goes through ``Location`` so ``s3://`` works too.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from hybridlt.dashboards.groups import hyperparams, normalise_status
from hybridlt.sweep.results import (
    GROUP_METRICS,
    StoreError,
    best_trial,
    exported_config,
    open_store,
    pareto_front,
    read_notes,
    read_sweep_doc,
    read_table_file,
    sweep_objective,
    trial_summary,
    trials_schema,
)
from hybridlt.sweep.store import EPOCH_FILE, EPOCH_SCHEMA, PARETO_FILE, SWEEP_YAML, Location, list_parquet

GROUPS = ("many", "medium", "few")
METRICS = GROUP_METRICS
FANOVA_MAX_TRIALS = 200
IMPORTANCE_MAX_TRIALS = 2000  # mean decrease impurity on a random sample beyond (seconds instead of tens)


Listing = dict[str, tuple[int, int]]  # file name -> (size, mtime in ns): a changed file is read again


list_folder = list_parquet


def epoch_files(names: list[str], folder: Location, table: str) -> dict[str, dict[int, str]]:
    """``{trial_id: {epoch: name}}`` from names ``<trial_id>-epoch-NNNN.parquet``; other names are warned about."""
    out: dict[str, dict[int, str]] = {}
    for name in names:
        m = EPOCH_FILE.match(name)
        if m is None:
            warnings.warn(f"results store: skipping {folder / name}: not a hybridlt {table} file name "
                          f"(<trial_id>-epoch-NNNN.parquet)", stacklevel=2)
            continue
        out.setdefault(m["trial"], {})[int(m["epoch"])] = name
    return out


class ResultsCache:
    """What the dashboard knows of one store, refreshed incrementally by file name, size and time.

    ``trials/`` is read whole (one small file per trial); of ``per_class/`` only each trial's last
    epoch (the file with the highest epoch in its name); ``epochs/`` only for trials a chart asks
    about, and for running trials (epochs but no trials row yet). Safe to share between threads.
    """

    def __init__(self, where: str | Path | Location):
        self.where = where
        self.root: Location | None = None
        self.version = 0
        self.message: str | None = None
        self.sweep_doc: dict = {}
        self._lock = threading.RLock()
        self._files: dict[str, Listing] = {}
        self._tables: dict[tuple[str, str], tuple[tuple[int, int], pa.Table | None]] = {}
        self._trial_rows: dict[str, pa.Table] = {}
        self._epoch_index: dict[str, dict[int, str]] = {}
        self._class_index: dict[str, dict[int, str]] = {}
        self._pareto: set[str] | None = None
        self._frames: dict[str, object] = {}
        self._checked = -math.inf

    # ---- refresh --------------------------------------------------------------------------
    def refresh(self, max_age_s: float = 0.0) -> bool:
        """Look for new files (unless the last look is under ``max_age_s`` old); returns whether anything
        the charts show changed (``version`` goes up)."""
        with self._lock:
            if time.monotonic() - self._checked < max_age_s:
                return False
            self._checked = time.monotonic()
            if self.root is None and not self._locate():
                return False
            had_doc = bool(self.sweep_doc)
            changed = self._list()
            if changed:
                self._read_trials()
            changed = self._read_extras() or changed or bool(self.sweep_doc) != had_doc
            if changed:
                self.version += 1
                self._frames.clear()
            self.message = None if (self._trial_rows or self._epoch_index) else self._empty_message()
            return changed

    def _locate(self) -> bool:
        try:
            self.root = open_store(self.where)
        except StoreError:
            self.message = (f"No results yet in {self.where}: no sweep.yaml or trials/ folder. "
                            f"This page looks again every few seconds.")
            return False
        return True

    def _empty_message(self) -> str:
        return (f"The store {self.root} holds no trials yet. Trials appear here as they report "
                f"(this page looks again every few seconds).")

    def _list(self) -> bool:
        """List the three folders; re-index those whose listing changed. Returns whether any did."""
        changed = False
        for table in ("trials", "epochs", "per_class"):
            listing = list_folder(self.root / table)
            if listing == self._files.get(table):
                continue
            changed, self._files[table] = True, listing
            if table == "epochs":
                self._epoch_index = epoch_files(sorted(listing), self.root / table, table)
            elif table == "per_class":
                self._class_index = epoch_files(sorted(listing), self.root / table, table)
        return changed

    def _read(self, table: str, name: str) -> pa.Table | None:
        """A file's table, read again only when its size or time changed."""
        stamp = self._files[table][name]
        held = self._tables.get((table, name))
        if held is None or held[0] != stamp:
            loc = self.root / table / name if table != "pareto" else self.root / name
            held = self._tables[(table, name)] = (stamp, read_table_file(loc, table))
        return held[1]

    def _read_trials(self) -> None:
        rows = {}
        for name in sorted(self._files["trials"]):
            data = self._read("trials", name)
            if data is not None and data.num_rows:
                rows[str(data.column("trial_id")[0])] = data
        self._trial_rows = rows

    def _read_extras(self) -> bool:
        """``sweep.yaml`` (once) and ``pareto.parquet`` (again when it changes); returns whether the front did."""
        if not self.sweep_doc and (self.root / SWEEP_YAML).exists():
            try:
                self.sweep_doc = read_sweep_doc(self.root)
            except StoreError as exc:
                warnings.warn(f"results store: {exc}", stacklevel=2)
                self.sweep_doc = {"unreadable": True}
        listing = {k: v for k, v in list_folder(self.root).items() if k == PARETO_FILE}
        if listing == self._files.get("pareto"):
            return False
        self._files["pareto"] = listing
        data = self._read("pareto", PARETO_FILE) if listing else None
        self._pareto = None if data is None else set(data.column("trial_id").to_pylist())
        return True

    # ---- what the charts read -------------------------------------------------------------
    def trials(self) -> pd.DataFrame:
        """One row per trial: the ``trials`` rows, plus running trials summarised from their epochs."""
        with self._lock:
            if "trials" not in self._frames:
                self._frames["trials"] = self._trials_frame()
            return self._frames["trials"]

    def _trials_frame(self) -> pd.DataFrame:
        tables = list(self._trial_rows.values())
        frame = to_pandas(pa.concat_tables(tables, promote_options="permissive") if tables
                          else trials_schema({}).empty_table())
        running = [t for t in self._epoch_index if t not in self._trial_rows]
        if running:
            rows = [{"trial_id": t, "status": "running", **trial_summary(self._epoch_rows(t))} for t in running]
            frame = pd.concat([frame, pd.DataFrame(rows)], ignore_index=True)
        return normalise_status(frame.reset_index(drop=True))

    def _epoch_rows(self, trial_id: str) -> list[dict]:
        tables = [self._read("epochs", name) for _, name in sorted(self._epoch_index.get(trial_id, {}).items())]
        return [r for t in tables if t is not None for r in t.to_pylist()]

    def epochs(self, trial_ids: list[str]) -> pd.DataFrame:
        """The ``epochs`` rows of these trials (read on first use, then only new files), by trial and epoch."""
        with self._lock:
            tables = [self._read("epochs", name) for t in trial_ids
                      for _, name in sorted(self._epoch_index.get(t, {}).items())]
        tables = [t for t in tables if t is not None]
        if not tables:
            return EPOCH_SCHEMA.empty_table().to_pandas()
        return pa.concat_tables(tables).to_pandas().sort_values(["trial_id", "epoch"], kind="stable")

    def epochs_at(self, trial_ids: list[str], epoch: int) -> pd.DataFrame:
        """The ``epochs`` row of each trial at ``epoch`` (one file per trial; trials without it left out)."""
        with self._lock:
            tables = [self._read("epochs", self._epoch_index[t][epoch]) for t in trial_ids
                      if epoch in self._epoch_index.get(t, {})]
        tables = [t for t in tables if t is not None]
        return (pa.concat_tables(tables) if tables else EPOCH_SCHEMA.empty_table()).to_pandas()

    def per_class_at(self, trial_ids: list[str], epoch: int | None = None) -> dict[str, pa.Table]:
        """Each trial's ``per_class`` rows at ``epoch`` (its last epoch when None), rank-sorted."""
        if epoch is None:
            return self.last_per_class(trial_ids)
        with self._lock:
            out = {}
            for t in trial_ids:
                name = self._class_index.get(t, {}).get(epoch)
                data = self._read("per_class", name) if name else None
                if data is not None and data.num_rows:
                    out[t] = rank_sorted(data)
            return out

    def started(self) -> dict[str, int]:
        """Each trial's start, as the time its first ``epochs`` file was written (ns): the history's order."""
        with self._lock:
            listing = self._files.get("epochs", {})
            return {t: listing[e[min(e)]][1] for t, e in self._epoch_index.items() if e and e[min(e)] in listing}

    def notes(self) -> dict[str, dict]:
        """Notes and tags per trial (``notes/<trial_id>.json``), read afresh: a save shows at once."""
        return read_notes(self.root) if self.root is not None else {}

    def last_per_class(self, trial_ids: list[str] | None = None) -> dict[str, pa.Table]:
        """Each trial's ``per_class`` rows at its last reported epoch, sorted by training count (rank order)."""
        with self._lock:
            ids = list(self._class_index) if trial_ids is None else [t for t in trial_ids if t in self._class_index]
            out = {}
            for t in ids:
                epochs = self._class_index[t]
                last = max(epochs)
                for e in epochs:  # a running trial's earlier epochs are not shown again: free them
                    if e != last:
                        self._tables.pop(("per_class", epochs[e]), None)
                data = self._read("per_class", epochs[last])
                if data is not None and data.num_rows:
                    out[t] = rank_sorted(data)
            return out

    def pareto_ids(self) -> set[str] | None:
        """Trials in ``pareto.parquet`` (None when the sweep has not written one)."""
        return self._pareto

    def objective(self) -> tuple[list[str], list[str]]:
        """The sweep's objective metrics and modes, from ``sweep.yaml`` (``acc``/``max`` when unknown)."""
        return sweep_objective(self.sweep_doc)

    def group_thresholds(self) -> tuple[int, int] | None:
        """``(many_above, few_below)`` of the sweep's base config, when ``sweep.yaml`` has them."""
        data = (self.sweep_doc.get("base") or {}).get("data") or {}
        if "many_above" in data and "few_below" in data:
            return int(data["many_above"]), int(data["few_below"])
        return None


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """A frame whose integer columns stay integers where they hold nulls (nullable ``Int64``)."""
    mapping = {pa.int8(): pd.Int64Dtype(), pa.int16(): pd.Int64Dtype(), pa.int32(): pd.Int64Dtype(),
               pa.int64(): pd.Int64Dtype()}
    return table.to_pandas(types_mapper=mapping.get)


def rank_sorted(per_class: pa.Table) -> pa.Table:
    """Per-class rows ordered by training count, largest first (ties by class index): row i is rank i."""
    return per_class.sort_by([("train_count", "descending"), ("class_index", "ascending")])


# ---- aggregation --------------------------------------------------------------------------------
def finished_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials with a ``trials`` row (completed, stopped or failed): a running trial's parameters are not known yet."""
    return trials[trials["status"] != "running"] if "status" in trials else trials


def param_columns(trials: pd.DataFrame) -> list[str]:
    """The ``param.*`` columns that vary, in store order (a parameter with one value drives nothing)."""
    return [c for c in trials.columns if c.startswith("param.") and trials[c].dropna().nunique() > 1]


def order_trials(trials: pd.DataFrame, metric: str, mode: str = "max") -> pd.DataFrame:
    """Trials by final ``metric``, best first; those without it last."""
    col = f"final_{metric}"
    return trials.sort_values(col, ascending=mode == "min", na_position="last", kind="stable")


def bin_edges(n: int, max_bins: int) -> np.ndarray:
    """Rank boundaries of at most ``max_bins`` contiguous bins over ``n`` classes (each bin >= 1 class)."""
    return np.linspace(0, n, min(n, max_bins) + 1).round().astype(int)


def bin_mean(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean of ``values[..., lo:hi]`` per bin, ignoring NaN (NaN where a bin has no value)."""
    values = np.asarray(values, dtype=float)
    ok = ~np.isnan(values)
    sums = np.add.reduceat(np.where(ok, values, 0.0), edges[:-1], axis=-1)
    counts = np.add.reduceat(ok.astype(float), edges[:-1], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


@dataclass
class ClassMatrix:
    """Per-class accuracy of trials (rows) by class rank (columns), binned when there are many classes.

    ``lo``/``hi``: first and last rank of each column; ``counts``: mean training count per column
    (the median over trials at each rank); ``names``: class names when columns are single classes.
    """

    trial_ids: list[str]
    acc: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    counts: np.ndarray
    names: list[str] | None
    n_classes: int


def class_matrix(per_class: dict[str, pa.Table], trial_ids: list[str], max_bins: int = 200) -> ClassMatrix:
    """Trials x class-rank accuracy, each trial's classes ordered by its own training counts."""
    ids = [t for t in trial_ids if t in per_class]
    n = max((per_class[t].num_rows for t in ids), default=0)
    acc = np.full((len(ids), n), np.nan)
    counts = np.full((len(ids), n), np.nan)
    for i, t in enumerate(ids):
        table = per_class[t]
        acc[i, :table.num_rows] = table.column("accuracy").to_numpy(zero_copy_only=False)
        counts[i, :table.num_rows] = table.column("train_count").to_numpy(zero_copy_only=False)
    edges = bin_edges(n, max_bins)
    profile = np.nanmedian(counts, axis=0) if ids else np.zeros(0)
    names = (per_class[ids[0]].column("class_name").to_pylist() if ids and len(edges) - 1 == n else None)
    binned = bin_mean(acc, edges) if n else acc
    return ClassMatrix(ids, binned, edges[:-1], edges[1:] - 1, bin_mean(profile, edges) if n else profile,
                       names, n)


def class_curves(per_class: dict[str, pa.Table], trial_ids: list[str], max_bins: int = 200) -> pd.DataFrame:
    """Long frame ``trial_id, rank_lo, rank_hi, rank, accuracy, train_count`` for accuracy-vs-rank lines."""
    m = class_matrix(per_class, trial_ids, max_bins)
    if not m.trial_ids:
        return pd.DataFrame(columns=["trial_id", "rank_lo", "rank_hi", "rank", "accuracy", "train_count"])
    k, t = len(m.lo), len(m.trial_ids)
    return pd.DataFrame({"trial_id": np.repeat(m.trial_ids, k), "rank_lo": np.tile(m.lo, t),
                         "rank_hi": np.tile(m.hi, t), "rank": np.tile((m.lo + m.hi) / 2, t),
                         "accuracy": m.acc.ravel(), "train_count": np.tile(m.counts, t)})


def pareto_points(trials: pd.DataFrame, metrics: list[str], modes: list[str],
                  front_ids: set[str] | None = None) -> pd.DataFrame:
    """``trial_id, x, y, on_front`` for the first two objectives; the front from ``pareto.parquet`` or computed."""
    x, y = f"final_{metrics[0]}", f"final_{metrics[1]}"
    pts = trials[["trial_id", x, y]].dropna().rename(columns={x: "x", y: "y"})
    if front_ids is None:
        front_ids = set(pareto_front([(r.trial_id, [r.x, r.y]) for r in pts.itertuples()], modes[:2]))
    return pts.assign(on_front=pts["trial_id"].isin(front_ids)).reset_index(drop=True)


# ---- parameter importance ------------------------------------------------------------------------
def _distributions(trials: pd.DataFrame, params: list[str]) -> dict:
    """Optuna distributions inferred from the observed values of each parameter column."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for p in params:
        v = trials[p].dropna()
        if pd.api.types.is_bool_dtype(v) or not pd.api.types.is_numeric_dtype(v):
            out[p] = CategoricalDistribution(sorted(v.astype(str).unique()))
        elif pd.api.types.is_integer_dtype(v):
            out[p] = IntDistribution(int(v.min()), int(v.max()))
        else:
            out[p] = FloatDistribution(float(v.min()), float(v.max()))
    return out


def _value(dist, v):
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return str(v)
    return int(v) if isinstance(dist, IntDistribution) else float(v)


def importance_study(trials: pd.DataFrame, metric: str, mode: str = "max"):
    """An Optuna study holding one complete trial per store trial that reported ``metric``."""
    import optuna

    trials = finished_trials(trials)
    params = hyperparams(param_columns(trials))
    dists = _distributions(trials, params)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    col = f"final_{metric}"
    done = []
    for row in trials[[*params, col]].to_dict("records"):
        value = row[col]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        chosen = {p: _value(dists[p], row[p]) for p in params if not pd.isna(row[p])}
        done.append(optuna.trial.create_trial(params=chosen, distributions={p: dists[p] for p in chosen},
                                              value=float(value)))
    study.add_trials(done)
    return study


def param_importance(trials: pd.DataFrame, metric: str, mode: str = "max") -> tuple[dict[str, float], str]:
    """``({param: importance}, evaluator name)``; fANOVA up to 200 trials, mean decrease impurity beyond
    (fANOVA takes ~20 s at 1,000 trials on 2 cores) or when fANOVA fails, on a random sample of
    ``IMPORTANCE_MAX_TRIALS`` beyond that (the name says so). Raises ValueError below 2 trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    scored = finished_trials(trials)
    scored = scored[scored[f"final_{metric}"].notna()] if f"final_{metric}" in scored else scored
    sample = ""
    if len(scored) > IMPORTANCE_MAX_TRIALS:  # Optuna copies every trial it is given: ~1 ms each
        scored = scored.sample(IMPORTANCE_MAX_TRIALS, random_state=0)
        sample = f" on a random {IMPORTANCE_MAX_TRIALS:,} of {len(finished_trials(trials)):,} trials"
    study = importance_study(scored, metric, mode)
    n = len(study.get_trials(deepcopy=False))
    if n < 2 or not hyperparams(param_columns(finished_trials(trials))):
        raise ValueError(f"parameter importance needs 2 or more complete trials with a varying parameter "
                         f"(have {n} with final {metric})")
    evaluators = [("mean decrease impurity", optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0))]
    if n <= FANOVA_MAX_TRIALS:
        evaluators.insert(0, ("fANOVA", optuna.importance.FanovaImportanceEvaluator(seed=0)))
    for name, evaluator in evaluators:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = optuna.importance.get_param_importances(study, evaluator=evaluator)
            if not found:
                raise ValueError("no parameter is set in every trial, and Optuna scores only those")
            return {k: float(v) for k, v in found.items()}, name + sample
        except (RuntimeError, ValueError, ZeroDivisionError) as exc:
            last = exc
    raise ValueError(f"parameter importance failed: {last}")


# ---- best config --------------------------------------------------------------------------------
def best_trial_id(trials: pd.DataFrame, metric: str, mode: str = "max") -> str | None:
    """The best trial by final ``metric``, picked as ``export-best`` picks it."""
    if f"final_{metric}" not in trials:
        return None
    best = best_trial(trials.to_dict("records"), metric, mode)
    return None if best is None else str(best["trial_id"])


def export_yaml(trials: pd.DataFrame, trial_id: str, root: Location | str, metric: str) -> str:
    """The YAML ``hybridlt export-best`` would write for this trial."""
    rows = trials[trials["trial_id"] == trial_id]
    if rows.empty:
        raise KeyError(f"no such trial in {root}")
    return exported_config(rows.iloc[0].to_dict(), root, metric)


def group_boundaries(m: ClassMatrix, thresholds: tuple[int, int] | None) -> list[tuple[float, str]]:
    """Ranks where the median training count leaves the many group and enters the few group, as chart marks."""
    if thresholds is None or not len(m.counts):
        return []
    many_above, few_below = thresholds
    marks = []
    for test, name in ((m.counts <= many_above, "medium →"), (m.counts < few_below, "few →")):
        hits = np.flatnonzero(test)
        if len(hits) and hits[0] > 0:
            marks.append((float(m.lo[hits[0]]) - 0.5, name))
    return marks
