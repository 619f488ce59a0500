"""The Python API: the same verbs as the CLI, the same validation, typed exceptions, quiet by default.

Every function takes a config (a path, a mapping or a validated model) plus ``--set``-style
``overrides`` and raises a ``hybridlt.HybridLTError`` subclass for bad input, never ``SystemExit``.
``progress=True`` prints what the CLI prints while it works.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hybridlt.sweep.config import (
    ConfigError,
    RunConfig,
    absolute_path_overrides,
    apply_overrides,
    load_run_config,
    resolve_data_paths,
    validate_run_config,
)


@dataclass
class TrainResult:
    """One finished (or resumed) run: its last epoch's metrics and where it lives."""

    metrics: dict
    run_dir: Path
    config: RunConfig
    class_names: list[str]
    class_counts: list[int]
    groups: dict[str, list[int]]


@dataclass
class Results:
    """The three tables of a results store as pandas frames (``None`` where nothing was written yet)."""

    store: str
    trials: pd.DataFrame | None
    epochs: pd.DataFrame | None
    per_class: pd.DataFrame | None


@dataclass
class SweepResult:
    """A finished sweep: its store (a path or URI) and its trials table."""

    store: str
    trials: pd.DataFrame | None
    wall_time_s: float


def _run_config(config: str | Path | dict | RunConfig | None, overrides: Sequence[str]) -> RunConfig | None:
    if config is None and not overrides:
        return None
    if isinstance(config, RunConfig | dict):  # relative data paths: the working directory's, made absolute
        raw = config.model_dump(mode="json") if isinstance(config, RunConfig) else copy.deepcopy(dict(config))
        raw = resolve_data_paths(raw, Path.cwd())
        return validate_run_config(apply_overrides(raw, absolute_path_overrides(overrides, Path.cwd())))
    return load_run_config(config, list(overrides))


def _resume_config(config, overrides: Sequence[str], out, resume: bool) -> RunConfig | None:
    """The config to run; on a resume with overrides but no config, the recorded one with them applied."""
    if resume and overrides and config is None and out is not None:
        from hybridlt.sweep.run import recorded_with_overrides

        found = recorded_with_overrides(Path(out), overrides)
        if found is not None:
            return found
    return _run_config(config, overrides)


def _out_dir(out: str | Path | None, cfg: RunConfig | None, resume: bool, kind: str = "") -> Path:
    """``out``, or on a new run ``runs/<name><kind>-<time>``; a resume must name its directory."""
    import time

    if out is not None:
        return Path(out)
    if resume:
        raise ConfigError("train --resume: --out DIR is required (the run directory to continue)")
    return Path("runs") / f"{cfg.name if cfg else 'run'}{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(config: str | Path | dict | RunConfig | None = None, overrides: Sequence[str] = (),
          out: str | Path | None = None, resume: bool = False, workers: int | None = None,
          progress: bool = False, address: str | None = None) -> TrainResult:
    """Train one config (``out`` defaults to ``runs/<name>-<time>``); ``resume`` continues ``out``.

    With ``workers`` the run goes through Ray Train with that many DDP workers.
    """
    from hybridlt.sweep.run import last_epoch_from_store, train_distributed, train_local

    cfg = _resume_config(config, overrides, out, resume)
    out = _out_dir(out, cfg, resume)
    if workers:
        train_distributed(cfg, out, workers, resume, address=address)
        metrics, names, counts, groups, run_cfg = last_epoch_from_store(out)
        return TrainResult(metrics, out.resolve(), run_cfg, names, counts, groups)
    say = print if progress else (lambda *a, **k: None)
    on_epoch = (lambda m: say(f"epoch {m['epoch']}: acc {m.get('acc', math.nan):.4f}")) if progress else None
    metrics, parts = train_local(cfg, out, resume, warn=say, on_epoch=on_epoch)
    return TrainResult(metrics, out.resolve(), parts.config, parts.class_names, parts.class_counts, parts.groups)


def train_seeds(config: str | Path | dict | RunConfig | None = None, seeds: Sequence[int] | None = None,
                overrides: Sequence[str] = (), out: str | Path | None = None, fuse: bool = False,
                resume: bool = False) -> list[TrainResult]:
    """Train one config once per seed, each an ordinary run in ``out/seed-<s>``; one ``TrainResult`` per
    seed, in the order given. ``fuse``: the seeds train together as one vmapped model (same results
    as one after another, to float rounding; ``model/fused.py``). ``resume`` continues ``out`` (its
    ``seeds.json`` names the seeds), fused or not whichever way it was started."""
    from hybridlt.sweep import run

    cfg = _resume_config(config, overrides, out, resume)
    out = _out_dir(out, cfg, resume, "-seeds").resolve()
    results = []
    for seed, _ in run.train_seeds(cfg, list(seeds) if seeds is not None else None, out, fuse, resume):
        metrics, names, counts, groups, run_cfg = run.last_epoch_from_store(run.seed_dir(out, seed))
        results.append(TrainResult(metrics, run.seed_dir(out, seed), run_cfg, names, counts, groups))
    return results


def sweep(spec: str | Path, overrides: Sequence[str] = (), resume: bool = False, address: str | None = None,
          num_cpus: int | None = None, progress: bool = False,
          show: Callable[[Any], None] | None = None) -> SweepResult:
    """Run (or ``resume``) a sweep spec on Ray Tune; the store is ``<storage>/<name>/results``."""
    from hybridlt.sweep.spec import load_sweep_spec
    from hybridlt.sweep.tuner import run_sweep

    spec_obj, base = load_sweep_spec(spec, list(overrides))
    if progress and show is None:
        show = lambda cb: print(cb.progress_line())  # noqa: E731
    trials, seconds = run_sweep(spec_obj, base, resume, address, show, num_cpus)
    store = f"{spec_obj.storage_uri.rstrip('/')}/{spec_obj.name}/results"
    return SweepResult(store, trials.to_pandas() if trials is not None else None, seconds)


def ablate(spec: str | Path | None = None, overrides: Sequence[str] = (), resume: bool = False,
           report: str | Path | None = None, reference: str | None = None, address: str | None = None,
           num_cpus: int | None = None, progress: bool = False) -> pd.DataFrame:
    """Run an ablation spec (variants x seeds), or with ``report`` rebuild the table of a store without Ray.

    Returns one row per variant and metric: n, mean, std, 95% CI, Δ and paired-test p vs the reference.
    The Markdown and CSV reports are written beside the store as the CLI writes them.
    """
    from hybridlt.sweep.ablate import load_ablation_spec, report_from_store, run_ablation, write_reports

    if report is None:
        if spec is None:
            raise ConfigError("ablate: give a SPEC to run, or report=STORE to rebuild the table of a finished one")
        spec_obj, base = load_ablation_spec(spec, list(overrides))
        show = (lambda cb: print(cb.progress_line())) if progress else None
        run_ablation(spec_obj, base, resume, address, show, num_cpus)
        report = f"{spec_obj.storage.rstrip('/')}/{spec_obj.name}"
    rows, ref, title, root = report_from_store(report, reference)
    write_reports(rows, ref, title, root)
    return pd.DataFrame(rows)


def export_best(results: str | Path, output: str | Path, metric: str | None = None, mode: str | None = None,
                force: bool = False, rank_by: str = "completed", confirm: int | None = None, seeds: int = 3,
                address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> dict:
    """Write the best trial's resolved run config to ``output``; returns that trial's row.

    ``rank_by``: ``completed`` (completed trials by their final metric) or ``common-epoch`` (every
    finished trial at the latest epoch all reached). ``confirm=K``: re-run the top K configs on
    ``seeds`` new seeds first (``sweep.confirm``) and export the best mean; returns the comparison
    (``winner``, ``runner_up``, ``candidates``, ``diff``, ``p``, ...).
    """
    if confirm is not None:
        from hybridlt.sweep.confirm import confirm_best

        return confirm_best(results, output, confirm, seeds, metric, mode, force, rank_by, address,
                            None if quiet else (lambda cb: print(cb.progress_line())), num_cpus)
    from hybridlt.sweep.results import export_best as export

    return export(results, output, metric, mode, force, rank_by)


def load_results(store: str | Path) -> Results:
    """The ``trials``, ``epochs`` and ``per_class`` tables of a store (a sweep, its results folder, a run)."""
    from hybridlt.sweep.results import open_store, read_dataset

    root = open_store(store)
    tables = {name: read_dataset(root, name) for name in ("trials", "epochs", "per_class")}
    return Results(str(root), **{k: (v.to_pandas() if v is not None else None) for k, v in tables.items()})
