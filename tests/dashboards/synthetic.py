"""Synthetic results stores of any size, written file for file as a sweep writes them.

For tests and benchmarks: ``write_synthetic_store(path, n_trials=1000, n_classes=1000, n_epochs=20)``
makes the 1,000 x 1,000 x 20 store of the render benchmark. Accuracy rises with epochs and
training count and depends on the parameters (the first ones most), so importance, slices and
the head/tail charts have something to show.
"""

from __future__ import annotations

import copy
import math
import multiprocessing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from hybridlt.data.long_tail import long_tail_counts, shot_groups
from hybridlt.sweep.metrics import GROUP_ORDER
from hybridlt.sweep.results import GROUP_METRICS, ResultsWriter, param_type, pareto_front, trials_schema
from hybridlt.sweep.store import EPOCH_SCHEMA, PER_CLASS_SCHEMA, Location, write_table_atomic

DEFAULT_SPACE: dict[str, dict] = {
    "loss.contrastive": {"choice": ["sc", "psc", "mpsc"]},
    "loss.temperature": {"loguniform": [0.05, 1.0]},
    "curriculum.power": {"uniform": [0.5, 3.0]},
    "optim.lr": {"loguniform": [0.01, 0.5]},
    "sampler.positives": {"int": [1, 4]},
}
MANY_ABOVE, FEW_BELOW, TEST_PER_CLASS = 100, 20, 50
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's: a 10,000-trial store's configs in seconds


@dataclass
class SyntheticTrial:
    """One trial's plan: its id, parameters, quality and how many epochs it reports."""

    trial_id: str
    params: dict
    quality: float
    epochs_done: int
    status: str
    rows: list[dict] = field(default_factory=list)


def sample_params(space: dict[str, dict], rng: np.random.Generator) -> dict:
    """One draw from a sweep-spec style space (choice, uniform, loguniform, int)."""
    out = {}
    for path, dist in space.items():
        kind, values = next(iter(dist.items()))
        if kind in ("choice", "grid"):
            out[path] = values[int(rng.integers(len(values)))]
        elif kind == "uniform":
            out[path] = float(rng.uniform(*values))
        elif kind == "loguniform":
            out[path] = float(math.exp(rng.uniform(math.log(values[0]), math.log(values[1]))))
        elif kind == "int":
            out[path] = int(rng.integers(values[0], values[1] + 1))
        else:
            raise ValueError(f"space {path}: unknown distribution {kind!r}")
    return out


def _position(dist: dict, value) -> float:
    """A parameter value mapped to [0, 1] within its distribution (choices: by index)."""
    kind, values = next(iter(dist.items()))
    if kind in ("choice", "grid"):
        return values.index(value) / max(1, len(values) - 1)
    lo, hi = values
    if kind == "loguniform":
        return (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (value - lo) / max(hi - lo, 1e-12)


def quality(params: dict, space: dict[str, dict]) -> float:
    """A trial's hidden quality: each parameter peaks somewhere, earlier parameters weigh more."""
    score = 0.0
    for i, (path, dist) in enumerate(space.items()):
        weight = 1.5 / (i + 1)
        optimum = 0.3 + 0.4 * ((i * 0.618) % 1.0)
        score -= weight * 4 * (_position(dist, params[path]) - optimum) ** 2
    return score + 1.0


def _plan(n_trials: int, space: dict, ablation: tuple[list[str], int] | None, rng,
          stopped: float = 0.33) -> list[SyntheticTrial]:
    """Trial ids, parameters and statuses; the weakest ``stopped`` fraction stops early, as ASHA would."""
    if ablation:
        variants, seeds = ablation
        params = [{"variant": v, "seed": s} for v in variants for s in range(seeds)]
        seed_effect = rng.normal(0, 0.1, seeds)  # a seed's data order helps or hurts every variant alike
        scores = [0.8 - 0.4 * variants.index(p["variant"]) / max(1, len(variants) - 1) + seed_effect[p["seed"]]
                  + rng.normal(0, 0.03) for p in params]
    else:
        params = [sample_params(space, rng) for _ in range(n_trials)]
        scores = [quality(p, space) + rng.normal(0, 0.15) for p in params]
    cut = np.quantile(scores, stopped) if len(scores) > 2 and stopped > 0 else -math.inf
    return [SyntheticTrial(f"{(i * 2654435761 + 97) % 2**32:08x}", p, q, 0, "stopped_early" if q < cut else "completed")
            for i, (p, q) in enumerate(zip(params, scores, strict=True))]


def _per_class_acc(trial: SyntheticTrial, epoch: int, n_epochs: int, z: np.ndarray, rng) -> np.ndarray:
    """Per-class test accuracy at an epoch: rising with training, with training count and quality."""
    progress = 1 - math.exp(-3 * epoch / n_epochs)
    logit = -2.0 + 4.0 * progress + trial.quality + 2.5 * (z - 0.5) + rng.normal(0, 0.3, z.shape)
    return np.round(1 / (1 + np.exp(-logit)) * TEST_PER_CLASS) / TEST_PER_CLASS


def _epoch_row(trial: SyntheticTrial, epoch: int, n_epochs: int, acc: np.ndarray, groups: dict, rng) -> dict:
    """The ``epochs`` row of one epoch: losses, alpha and the group accuracies."""
    power = float(trial.params.get("curriculum.power", 2.0))
    mean = float(acc.mean())
    row = {"trial_id": trial.trial_id, "epoch": epoch, "acc": mean, "balanced_acc": mean,
           "con_loss": 2.0 + 4.0 * math.exp(-2 * epoch / n_epochs) + rng.normal(0, 0.05),
           "ce_loss": -math.log(max(mean, 1e-3)) * 1.3 + rng.normal(0, 0.03),
           "alpha": 1 - (epoch / n_epochs) ** power, "lr": 0.05 * (1 + math.cos(math.pi * epoch / n_epochs)),
           "epoch_time_s": 1.0 + rng.normal(0, 0.05), "eval_time_s": 0.1, "images_per_s": 5000.0,
           "data_wait_s": 0.0}
    row["loss"] = row["alpha"] * row["con_loss"] + (1 - row["alpha"]) * row["ce_loss"]
    for g, idx in groups.items():
        row[f"{g}_acc"] = float(acc[idx].mean()) if len(idx) else None
    return row


def _diagnostics(acc: np.ndarray, z: np.ndarray, groups: dict, rng) -> tuple[dict, dict]:
    """Per-class columns and epoch-row values of the long-tail diagnostics: weight norms growing with
    training count, logit adjustment and τ-norm trading head accuracy for tail accuracy."""
    per_class = {"weight_norm": 0.6 + 0.8 * z + rng.normal(0, 0.02, z.shape),
                 "la_accuracy": np.clip(acc + 0.12 * (0.6 - z), 0, 1),
                 "taunorm_accuracy": np.clip(acc + 0.08 * (0.6 - z), 0, 1)}
    row = {}
    for prefix, key in (("la", "la_accuracy"), ("taunorm", "taunorm_accuracy")):
        a = per_class[key]
        row |= {f"{prefix}_acc": float(a.mean()), f"{prefix}_balanced_acc": float(a.mean()),
                f"{prefix}_few_acc": float(a[groups["few"]].mean()) if len(groups["few"]) else None}
    for i, true in enumerate(GROUP_ORDER):
        right = float(acc[groups[true]].mean()) if len(groups[true]) else 0.0
        wrong = (1 - right) * np.array([0.7, 0.2, 0.1] if i else [0.0, 0.7, 0.3])  # errors go to the head
        for j, predicted in enumerate(GROUP_ORDER):
            row[f"confusion_{true}_to_{predicted}"] = right if i == j else float(wrong[j] / max(wrong.sum(), 1e-9)
                                                                                  * (1 - right))
    return per_class, row


def _write_trial_files(root: str, trial: SyntheticTrial, n_epochs: int, counts: np.ndarray, seed: int) -> list[dict]:
    """Writes one trial's ``epochs`` and ``per_class`` files; returns its epoch rows."""
    rng = np.random.default_rng([seed, int(trial.trial_id, 16)])
    z = np.log(counts) / np.log(counts.max()) if counts.max() > 1 else np.ones(len(counts))
    groups = {g: np.asarray(idx, dtype=int) for g, idx in shot_groups(counts.tolist(), MANY_ABOVE, FEW_BELOW).items()}
    n = len(counts)
    names = pa.array([f"class_{c:05d}" for c in range(n)])
    rows = []
    for epoch in range(1, trial.epochs_done + 1):
        acc = _per_class_acc(trial, epoch, n_epochs, z, rng)
        diag, diag_row = _diagnostics(acc, z, groups, rng)
        rows.append(_epoch_row(trial, epoch, n_epochs, acc, groups, rng) | diag_row)
        name = f"{trial.trial_id}-epoch-{epoch:04d}.parquet"
        pq.write_table(pa.Table.from_pylist([rows[-1]], schema=EPOCH_SCHEMA), f"{root}/epochs/{name}")
        table = pa.table({"trial_id": pa.array([trial.trial_id] * n), "epoch": pa.array(np.full(n, epoch, np.int32)),
                          "class_index": pa.array(np.arange(n, dtype=np.int32)), "class_name": names,
                          "train_count": pa.array(counts.astype(np.int64)), "accuracy": pa.array(acc),
                          **{k: pa.array(v) for k, v in diag.items()}},
                         schema=PER_CLASS_SCHEMA)
        pq.write_table(table, f"{root}/per_class/{name}")
    return rows


def _write_chunk(job: tuple) -> list[list[dict]]:
    root, trials, n_epochs, counts, seed = job
    return [_write_trial_files(root, t, n_epochs, counts, seed) for t in trials]


def _trial_row(trial: SyntheticTrial, base: dict, n_epochs: int) -> dict:
    """The ``trials`` row: final and best metrics from the epoch rows, and a valid resolved config."""
    last = trial.rows[-1]
    best = max(trial.rows, key=lambda r: r["acc"])
    config = copy.deepcopy(base)
    for path, value in trial.params.items():
        if path == "variant":
            config["name"] = f"synthetic-{value}"
            continue
        *parents, leaf = path.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    row = {"trial_id": trial.trial_id, "status": trial.status, "epochs_done": trial.epochs_done,
           "epochs_planned": n_epochs, "wall_time_s": 1.1 * trial.epochs_done, "best_epoch": best["epoch"],
           "config_yaml": yaml.dump(config, Dumper=DUMPER, sort_keys=False)}
    for m in GROUP_METRICS:
        row[f"final_{m}"] = last[m]
        row[f"best_{m}"] = max((r[m] for r in trial.rows if r[m] is not None), default=None)
    row.update({f"param.{k}": v for k, v in trial.params.items()})
    return row


def _base_config(n_epochs: int, max_count: int, ratio: float) -> dict:
    """The resolved run config every synthetic trial starts from (a valid ``RunConfig``)."""
    from hybridlt.sweep.config import load_run_config

    sets = ["name=synthetic", f"data.imbalance_ratio={ratio}", f"data.max_count={max_count}",
            f"data.many_above={MANY_ABOVE}", f"data.few_below={FEW_BELOW}", f"train.epochs={n_epochs}",
            "optim.milestones=[]", "optim.schedule=cosine"]
    return load_run_config(None, sets).model_dump(mode="json")


def write_synthetic_store(root: str | Path, n_trials: int = 16, n_classes: int = 10, n_epochs: int = 5,
                          space: dict[str, dict] | None = None, seed: int = 0, *, max_count: int = 500,
                          imbalance_ratio: float = 100.0, objectives: tuple[str, ...] = ("acc",),
                          ablation: tuple[list[str], int] | None = None, stopped: float = 0.33,
                          workers: int = 1) -> Location:
    """Writes ``<root>/{sweep.yaml,trials,epochs,per_class}`` (and ``pareto.parquet`` for 2+ objectives).

    ``ablation=(variants, seeds)`` makes one trial per variant and seed with ``param.variant`` and
    ``param.seed`` columns instead of sampled parameters; the weakest ``stopped`` fraction of the
    trials stops after a third of the epochs. Returns the store's location.
    """
    rng = np.random.default_rng(seed)
    space = dict(DEFAULT_SPACE if space is None else space)
    if ablation:
        space = {"variant": {"choice": list(ablation[0])}, "seed": {"int": [0, ablation[1] - 1]}}
    trials = _plan(n_trials, space, ablation, rng, stopped)
    for t in trials:
        t.epochs_done = max(1, n_epochs // 3) if t.status == "stopped_early" else n_epochs
    counts = np.asarray(long_tail_counts(n_classes, max_count, imbalance_ratio), dtype=np.int64)
    counts = counts[rng.permutation(n_classes)]  # class index is not the count rank, as in iNaturalist
    loc = Location.of(root)
    for sub in ("trials", "epochs", "per_class"):
        Path(loc.path, sub).mkdir(parents=True, exist_ok=True)
    chunks = [trials[i::workers] for i in range(workers)]
    jobs = [(loc.path, chunk, n_epochs, counts, seed) for chunk in chunks]
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = pool.map(_write_chunk, jobs)
    else:
        results = [_write_chunk(job) for job in jobs]
    for chunk, rows in zip(chunks, results, strict=True):
        for t, r in zip(chunk, rows, strict=True):
            t.rows = r
    _write_tables(loc, trials, space, n_epochs, max_count, imbalance_ratio, objectives)
    return loc


def _write_tables(loc: Location, trials: list[SyntheticTrial], space: dict, n_epochs: int, max_count: int,
                  ratio: float, objectives: tuple[str, ...]) -> None:
    """``trials/``, ``sweep.yaml`` and, for several objectives, ``pareto.parquet``."""
    base = _base_config(n_epochs, max_count, ratio)
    types = {path: param_type(next(iter(d.values()))) for path, d in space.items()}
    schema = trials_schema(types)
    rows = [_trial_row(t, base, n_epochs) for t in trials]
    table = pa.Table.from_pylist([{**r, "schema_version": 1} for r in rows], schema=schema)
    for i, row in enumerate(rows):
        pq.write_table(table.slice(i, 1), f"{loc.path}/trials/{row['trial_id']}.parquet")
    metric = list(objectives) if len(objectives) > 1 else objectives[0]
    mode = ["max"] * len(objectives) if len(objectives) > 1 else "max"
    spec = {"name": "synthetic", "storage": str(Path(loc.path).parent), "base": "synthetic", "space": space,
            "objective": {"metric": metric, "mode": mode}, "trials": len(trials)}
    ResultsWriter(loc).sweep_yaml(spec, base, types)
    if len(objectives) > 1:
        cols = [f"final_{m}" for m in objectives]
        front = set(pareto_front([(r["trial_id"], [r[c] for c in cols]) for r in rows], ["max"] * len(cols)))
        pareto = pa.Table.from_pylist([{"trial_id": r["trial_id"], **{c: r[c] for c in cols}} for r in rows
                                       if r["trial_id"] in front])
        write_table_atomic(pareto, loc / "pareto.parquet")


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.dashboards.synthetic OUT --trials N --classes C --epochs E``."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=multiprocessing.cpu_count())
    parser.add_argument("--objectives", default="acc", help="comma-separated, e.g. acc,few_acc")
    parser.add_argument("--stopped", type=float, default=0.33, help="fraction of trials stopped early")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    write_synthetic_store(args.out, args.trials, args.classes, args.epochs, workers=args.workers,
                          objectives=tuple(args.objectives.split(",")), stopped=args.stopped)
    print(f"wrote {args.out}: {args.trials} trials x {args.classes} classes x {args.epochs} epochs "
          f"in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
