"""Honest comparisons for the dashboard: seeds grouped, equal budgets, paired differences.

Trials that differ only by ``param.seed`` form a group (an ablation's variant, a confirmed best run
with several seeds); ``param.seed`` is never a hyperparameter. A budget rule makes values comparable:
``final`` scores completed trials by their final metric (trials stopped early are shown, marked, and
not scored), ``common`` scores every finished trial at the largest epoch all of them reached. Means,
95% CIs, paired Δ and p come from ``hybridlt.sweep.paired`` (what ``hybridlt ablate`` prints).
Accuracies are fractions in the frames and percent in what the statistics return (as ``ablate``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

from hybridlt.sweep.metrics import ACCURACY_METRICS
from hybridlt.sweep.paired import ablation_report, t_quantile

SEED = "param.seed"
STOPPED = ("stopped_early", "stopped")  # today's and issue #12's spelling of a trial ASHA stopped
BUDGETS = {"final": "completed trials' final value", "common": "every trial's value at a common epoch"}


def normalise_status(trials: pd.DataFrame) -> pd.DataFrame:
    """``stopped`` (older stores) reads as ``stopped_early``."""
    if "status" not in trials or not (trials["status"] == "stopped").any():
        return trials
    return trials.assign(status=trials["status"].replace({"stopped": "stopped_early"}))


def hyperparams(params: list[str]) -> list[str]:
    """The parameter columns that are hyperparameters: all but the seed."""
    return [p for p in params if p != SEED]


def _show(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def group_labels(trials: pd.DataFrame, params: list[str]) -> pd.Series:
    """Each trial's group, named by its variant and parameters (the seed left out), by trial id. Without a
    seed column every trial is its own group, named by its trial id (its parameters are in the table)."""
    if SEED not in params and SEED not in trials:
        return pd.Series(trials["trial_id"].to_numpy(), index=trials["trial_id"].to_numpy())
    keys = hyperparams(params)
    if not keys:
        return pd.Series("all trials", index=trials["trial_id"].to_numpy())
    cols = [trials[k] for k in keys]
    names = [k.removeprefix("param.") for k in keys]
    labels = [", ".join(f"{n}={_show(v)}" if n != "variant" else str(v)
                        for n, v in zip(names, values, strict=True) if not pd.isna(v))
              for values in zip(*cols, strict=True)]
    labels = [lab or tid for lab, tid in zip(labels, trials["trial_id"], strict=True)]  # running: no params yet
    return pd.Series(labels, index=trials["trial_id"].to_numpy())


def seeds_of(trials: pd.DataFrame) -> pd.Series:
    """The seed that pairs a trial with its peers in other groups (the trial id when there is no seed)."""
    if SEED in trials:
        return pd.Series(trials[SEED].astype(object).where(trials[SEED].notna(), trials["trial_id"]).to_numpy(),
                         index=trials["trial_id"].to_numpy())
    return pd.Series(trials["trial_id"].to_numpy(), index=trials["trial_id"].to_numpy())


@dataclass
class Budget:
    """Trials with comparable values: ``frame`` holds the finished trials, its ``final_<metric>`` columns
    replaced by the budget's values and ``scored`` saying which count; ``note`` says the rule in force."""

    rule: str
    frame: pd.DataFrame
    epoch: int | None
    note: str


def common_epoch(trials: pd.DataFrame) -> int | None:
    """The largest epoch every finished trial reached (None without a finished trial)."""
    done = trials[trials["status"] != "running"]
    reached = pd.to_numeric(done.get("epochs_done"), errors="coerce").dropna()
    reached = reached[reached > 0]
    return int(reached.min()) if len(reached) else None


def apply_budget(trials: pd.DataFrame, rule: str, epoch_rows: pd.DataFrame | None = None,
                 epoch: int | None = None) -> Budget:
    """The budget frame for ``rule``; for ``common``, ``epoch_rows`` are the ``epochs`` rows at ``epoch``."""
    done = normalise_status(trials[trials["status"] != "running"]).copy()
    stopped = done["status"].isin(STOPPED)
    if rule == "common" and epoch is not None and epoch_rows is not None:
        at = epoch_rows.set_index("trial_id")
        for m in ACCURACY_METRICS:
            done[f"final_{m}"] = done["trial_id"].map(at[m]) if m in at else np.nan
        done["scored"] = done["final_acc"].notna() & (done["status"] != "failed")
        note = (f"budget: every trial's value at epoch {epoch}, the last epoch all {int(done['scored'].sum())} "
                f"finished trials reached ({int(stopped.sum())} of them stopped early)")
        return Budget("common", done, epoch, note)
    done["scored"] = done["status"] == "completed"
    note = (f"budget: completed trials' final value ({int(done['scored'].sum())} scored; "
            f"{int(stopped.sum())} stopped early shown grey ×, not scored)")
    return Budget("final", done, None, note)


# ---- statistics over seeds (sweep.paired: the numbers of `hybridlt ablate`) ----------------------------
def _report_rows(frame: pd.DataFrame, labels: pd.Series, seeds: pd.Series, metric_cols: dict[str, str]) -> list[dict]:
    rows = []
    for r in frame.to_dict("records"):
        rows.append({"status": "completed", "param.variant": labels[r["trial_id"]], "param.seed": seeds[r["trial_id"]],
                     **{f"final_{k}": r[c] for k, c in metric_cols.items()}})
    return rows


def group_report(budget: Budget, labels: pd.Series, seeds: pd.Series, groups: list[str], reference: str,
                 metrics: tuple[str, ...] = ACCURACY_METRICS) -> pd.DataFrame:
    """``ablation_report`` over the scored trials of ``groups``: per group and metric n, mean, std, 95% CI, and
    against ``reference`` the paired Δ with its 95% CI and p (all in %)."""
    scored = budget.frame[budget.frame["scored"] & budget.frame["trial_id"].map(labels).isin(groups)]
    rows = _report_rows(scored, labels, seeds, {m: f"final_{m}" for m in metrics})
    order = [reference, *[g for g in groups if g != reference]]
    return pd.DataFrame(ablation_report(rows, order, reference, metrics))


def class_report(per_class: dict[str, pa.Table], budget: Budget, labels: pd.Series, seeds: pd.Series,
                 groups: list[str], reference: str) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Per-class ``ablation_report`` (classes by training count, largest first): the report frame, the
    training counts in that order and the class names. ``per_class``: each trial's rows, rank-sorted."""
    ids = [t for t in budget.frame.loc[budget.frame["scored"], "trial_id"] if t in per_class
           and labels[t] in groups]
    if not ids:
        return pd.DataFrame(), np.zeros(0), []
    first = per_class[ids[0]]
    n = first.num_rows
    keys = tuple(f"class{i:05d}" for i in range(n))
    rows = []
    for t in ids:
        acc = per_class[t].column("accuracy").to_numpy(zero_copy_only=False)
        if len(acc) != n:
            continue
        rows.append({"status": "completed", "param.variant": labels[t], "param.seed": seeds[t],
                     **{f"final_{k}": (None if math.isnan(a) else float(a)) for k, a in zip(keys, acc, strict=True)}})
    order = [reference, *[g for g in groups if g != reference]]
    report = pd.DataFrame(ablation_report(rows, order, reference, keys))
    counts = first.column("train_count").to_numpy(zero_copy_only=False)
    return report, counts, first.column("class_name").to_pylist()


def mean_per_class(per_class: dict[str, pa.Table], members: dict[str, list[str]]) -> dict[str, pa.Table]:
    """Per group, its members' per-class accuracy averaged over seeds (rows in rank order)."""
    out = {}
    for g, ids in members.items():
        tables = [per_class[t] for t in ids if t in per_class]
        tables = [t for t in tables if t.num_rows == tables[0].num_rows] if tables else []
        if not tables:
            continue
        acc = np.nanmean(np.vstack([t.column("accuracy").to_numpy(zero_copy_only=False) for t in tables]), axis=0) \
            if len(tables) > 1 else tables[0].column("accuracy").to_numpy(zero_copy_only=False)
        out[g] = tables[0].set_column(tables[0].schema.get_field_index("accuracy"), "accuracy", pa.array(acc))
    return out


def curve_bands(epochs: pd.DataFrame, labels: pd.Series, metric: str) -> pd.DataFrame:
    """Per group and epoch: mean, 95% CI half-width (t quantile; NaN for one seed) and n of ``metric``."""
    if epochs.empty:
        return pd.DataFrame(columns=["group", "epoch", "mean", "half", "n"])
    frame = epochs.assign(group=epochs["trial_id"].map(labels))
    out = frame.groupby(["group", "epoch"], sort=False)[metric].agg(["mean", "std", "count"]).reset_index()
    quantiles = {n: t_quantile(n - 1) for n in out["count"].unique() if n > 1}
    out["half"] = [quantiles[n] * s / math.sqrt(n) if n > 1 else math.nan for n, s in zip(out["count"], out["std"],
                                                                                           strict=True)]
    return out.rename(columns={"count": "n"}).sort_values(["group", "epoch"], kind="stable")


# ---- history, config diff ----------------------------------------------------------------------------
def history(trials: pd.DataFrame, started: dict[str, int], metric: str, mode: str = "max") -> pd.DataFrame:
    """Trials in the order they started: ``order, trial_id, status, value, best`` (best so far over completed)."""
    frame = normalise_status(trials).assign(start=trials["trial_id"].map(started))
    frame = frame.sort_values(["start", "trial_id"], na_position="last", kind="stable").reset_index(drop=True)
    value = frame[f"final_{metric}"].astype(float)
    counted = value.where(frame["status"] == "completed")
    best = counted.cummax() if mode == "max" else counted.cummin()
    return pd.DataFrame({"order": np.arange(1, len(frame) + 1), "trial_id": frame["trial_id"],
                         "status": frame["status"], "value": value, "best": best.ffill()})


def _flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out
    return {prefix.rstrip("."): node}


def config_diff(row_a: dict, row_b: dict) -> list[tuple[str, object, object]]:
    """The resolved-config keys where two trials differ: ``(key, value in a, value in b)``."""
    a = _flatten(yaml.safe_load(row_a.get("config_yaml") or "{}") or {})
    b = _flatten(yaml.safe_load(row_b.get("config_yaml") or "{}") or {})
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
