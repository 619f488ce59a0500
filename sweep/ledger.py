"""The store as the sweep's own record of its trials: what is finished, what must continue, what
is still to start, and the ``trials`` row of one trial built from what its rank 0 recorded.

Ray Tune's experiment snapshot can miss trials that started after it was taken; the store does
not: a trial's rank 0 records ``configs/<trial>.yaml`` before its first epoch. ``--resume`` plans
from here (``plan``), and Tune runs the plan.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import yaml

from hybridlt.sweep.config import validate_run_config
from hybridlt.sweep.results import FINISHED, ResultsWriter, read_dataset, trial_summary
from hybridlt.sweep.spec import SweepSpec
from hybridlt.sweep.store import Location


def read_record(root: Location, trial_id: str) -> dict | None:
    """What the trial's rank 0 recorded it trains with (``configs/<trial>.yaml``), or None."""
    loc = root / "configs" / f"{trial_id}.yaml"
    try:
        return yaml.safe_load(loc.read_bytes()) if loc.exists() else None
    except (OSError, yaml.YAMLError):
        return None


def _epoch_rows(root: Location, trial_id: str) -> list[dict]:
    epochs = read_dataset(root, "epochs", name_prefix=f"{trial_id}-epoch-")
    return sorted(epochs.to_pylist(), key=lambda r: r["epoch"]) if epochs is not None else []


def trial_row(root: Location, base, trial_id: str, params: dict, status: str, error: str | None,
              wall: float | None) -> dict:
    """One ``trials`` row: the summary of the trial's epoch files, and the config it recorded.

    ``status`` ``completed`` is checked against the epochs: fewer than planned is ``stopped_early``.
    """
    rows = _epoch_rows(root, trial_id)
    summary = trial_summary(rows)
    record = read_record(root, trial_id)
    config_yaml, planned = None, base.train.epochs
    if record and record.get("config"):
        cfg = validate_run_config(record["config"], f"trial {trial_id}")
        config_yaml, planned = cfg.to_yaml(), cfg.train.epochs  # as trained (epochs may be searched)
    if status == "completed" and summary["epochs_done"] < planned:
        status = "stopped_early"
    out = {"trial_id": trial_id, "status": status, "error": error, "epochs_planned": planned,
           "wall_time_s": wall, "config_yaml": config_yaml, **summary,
           "stopped_epoch": summary["epochs_done"] if status == "stopped_early" else None}
    out.update({f"param.{k}": v for k, v in params.items()})
    return out


def write_row(root: Location, row: dict, schema: pa.Schema) -> None:
    ResultsWriter(root).trial(row, schema)


def grid_combos(spec: SweepSpec) -> list[dict]:
    """Every trial of a grid sweep, in order: each combination of the grid parameters, ``trials`` times."""
    names = list(spec.space)
    combos = [dict(zip(names, values, strict=True)) for values in
              itertools.product(*(spec.space[n].values for n in names))]
    return combos * spec.trials


def total_trials(spec: SweepSpec) -> int:
    """Trials the sweep runs: ``trials`` samples, or for a grid ``trials`` repeats of every combination."""
    if spec.search.algorithm != "grid":
        return spec.trials
    return spec.trials * math.prod(len(p.values) for p in spec.space.values())


def _key(params: dict) -> str:
    return yaml.safe_dump(params, sort_keys=True)


@dataclass
class Plan:
    """What a (resumed) sweep still has to do."""

    rows: dict[str, dict] = field(default_factory=dict)  # trial id -> its trials row (finished or interrupted)
    finished: list[str] = field(default_factory=list)
    unfinished: list[tuple[str, dict, int]] = field(default_factory=list)  # (trial id, params, epochs done)
    completed_now: list[str] = field(default_factory=list)  # all epochs there, row missing: written by plan()
    fresh_grid: list[dict] | None = None  # grid: the combinations not started yet
    fresh: int = 0  # trials still to start


def plan(spec: SweepSpec, base, root: Location, schema: pa.Schema) -> Plan:
    """Reconcile the store: finished trials stay as they are; every other trial that started
    (recorded config, epoch files or an ``interrupted`` row) continues under its own id; the rest
    of the planned trials start fresh. A trial with all its epochs but no row gets its row now."""
    out = Plan()
    trials = read_dataset(root, "trials")
    out.rows = {r["trial_id"]: r for r in (trials.to_pylist() if trials is not None else [])}
    started: dict[str, dict] = {}
    for loc in (root / "configs").files(".yaml"):
        record = read_record(root, loc.name.removesuffix(".yaml"))
        if record and "trial_id" in record:
            started[record["trial_id"]] = dict(record.get("params") or {})
    for trial_id, row in out.rows.items():
        if trial_id not in started:
            started[trial_id] = {k.removeprefix("param."): v for k, v in row.items()
                                 if k.startswith("param.") and v is not None}
    for trial_id, params in started.items():
        row = out.rows.get(trial_id)
        if row is not None and row["status"] in FINISHED:
            out.finished.append(trial_id)
            continue
        record = read_record(root, trial_id)
        planned = validate_run_config(record["config"], trial_id).train.epochs if record else base.train.epochs
        done = len(_epoch_rows(root, trial_id))
        if record and done >= planned:
            new = trial_row(root, base, trial_id, params, "completed", None, None)
            write_row(root, new, schema)
            out.rows[trial_id] = new
            out.finished.append(trial_id)
            out.completed_now.append(trial_id)
        else:
            out.unfinished.append((trial_id, params, done))
    remaining = max(0, total_trials(spec) - len(started))
    if spec.search.algorithm == "grid":
        left = Counter(_key(p) for p in grid_combos(spec))
        left.subtract(_key(p) for p in started.values())
        out.fresh_grid = []
        for combo in grid_combos(spec):
            if left[_key(combo)] > 0:
                left[_key(combo)] -= 1
                out.fresh_grid.append(combo)
        remaining = len(out.fresh_grid)
    out.fresh = remaining
    return out
