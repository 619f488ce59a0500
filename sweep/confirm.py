"""A confirmed best: the top ``K`` configs of a sweep re-run on ``N`` new seeds before one is exported.

A sweep's best trial won one draw of the seed; among many trials the winner's accuracy is biased
upwards (the winner's curse), and the runner-up is often as good. ``confirm_best`` ranks the
comparable trials (the same rule as ``export-best``), takes the top ``K``, and runs them as an
ablation (``sweep.ablate``: the same store format, lock, ``--resume`` and Ctrl-C handling as any
sweep) named ``<sweep>-confirm<K>x<N>`` beside the sweep, with seeds ``base seed + 1 ... + N`` (not
the seed the sweep chose them on). The candidate with the best mean wins; its original trial's
config is exported, with a header saying how it was chosen, each candidate's mean and 95% CI, and
the paired t-test of the winner against the runner-up (same seed = same data order and init).

Running the same command again resumes the confirmation where it stopped.
"""

from __future__ import annotations

import json
import math

from hybridlt.errors import InputError
from hybridlt.sweep.metrics import METRICS
from hybridlt.sweep.paired import ablation_report
from hybridlt.sweep.results import (
    StoreError,
    check_export_target,
    exported_config,
    open_store,
    rank_trials,
    read_dataset,
    read_sweep_doc,
    sweep_objective,
    write_export,
)
from hybridlt.sweep.store import Location


def _overrides(row: dict) -> list[str]:
    """The trial's searched values as ``--set`` overrides (JSON values are YAML too)."""
    return [f"{k.removeprefix('param.')}={json.dumps(v)}" for k, v in sorted(row.items())
            if k.startswith("param.") and v is not None and k != "param.seed"]


def _sweep_storage(root: Location, name: str) -> str:
    """The storage folder (or URI) that holds the sweep ``name`` whose results are ``root``."""
    text = str(root)
    suffix = f"/{name}/results"
    if not text.endswith(suffix):
        raise StoreError(f"RESULTS: {root} is not a sweep's results folder (<storage>/<name>/results)")
    return text[: -len(suffix)] or "/"


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def confirm_best(results, output, k: int = 3, seeds: int = 3, metric: str | None = None, mode: str | None = None,
                 force: bool = False, rule: str = "completed", address: str | None = None, show=None,
                 num_cpus: int | None = None) -> dict:
    """Re-run the top ``k`` trials of the sweep at ``results`` on ``seeds`` new seeds and export the
    one with the best mean to ``output``. Returns ``winner`` and ``runner_up`` (trial ids),
    ``candidates`` (one dict per candidate: trial id, its sweep value, mean, std, 95% CI, n),
    ``diff`` / ``diff_ci95`` / ``p`` (winner minus runner-up, paired over seeds), ``store`` (the
    confirmation's results) and ``seconds``."""
    from hybridlt.sweep.ablate import AblationSpec, run_ablation
    from hybridlt.sweep.config import ConfigError, validate_run_config

    if k < 2:
        raise InputError(f"--confirm: {k}; allowed: 2 or more candidates (one has nothing to be confirmed against)")
    if seeds < 2:
        raise InputError(f"--seeds: {seeds}; allowed: 2 or more (a paired test needs two seeds)")
    out = check_export_target(output, force)
    root = open_store(results)
    doc = read_sweep_doc(root)
    spec_doc, base_doc = doc.get("spec") or {}, doc.get("base")
    if not spec_doc.get("name") or not isinstance(base_doc, dict):
        raise StoreError(f"RESULTS: {root} is not a sweep's store (its sweep.yaml records no spec and base)")
    if any(p.get("variants") for p in (spec_doc.get("space") or {}).values() if isinstance(p, dict)):
        raise InputError(f"--confirm: {root} is an ablation; allowed: the store of a sweep")
    metrics, modes = sweep_objective(doc)
    metric, mode = metric or metrics[0], mode or modes[0]
    trials = read_dataset(root, "trials")
    rows = trials.to_pylist() if trials is not None else []
    epochs = read_dataset(root, "epochs") if rule == "common-epoch" else None
    ranked, why = rank_trials(rows, metric, mode, rule, epochs.to_pylist() if epochs is not None else None)
    seen, candidates = set(), []
    for row in ranked:  # one candidate per distinct config
        key = tuple(_overrides(row))
        if key not in seen:
            seen.add(key)
            candidates.append(row)
    candidates = candidates[:k]
    if len(candidates) < 2:
        raise ConfigError(f"--confirm: {root} has {len(candidates)} comparable trial(s) by {why}; "
                          f"allowed: at least 2 to compare")
    base_seed = int(base_doc.get("seed", 0))
    variants = {row["trial_id"]: _overrides(row) for row in candidates}
    name = f"{spec_doc['name']}-confirm{k}x{seeds}"
    storage = _sweep_storage(root, spec_doc["name"])
    ablation = AblationSpec(name=name, storage=storage, base=base_doc, variants=variants,
                            reference=candidates[0]["trial_id"],
                            seeds=[base_seed + 1 + i for i in range(seeds)],
                            resources=spec_doc.get("resources") or {}, concurrency=spec_doc.get("concurrency"))
    base = validate_run_config(base_doc, f"{root}/sweep.yaml base")
    exp = Location.of(f"{storage.rstrip('/')}/{name}/results")
    resume = (exp / "sweep.yaml").exists()
    if show:
        verb = "resuming" if resume else "running"
        print(f"confirm: {verb} the top {len(candidates)} trials by {why} on seeds {ablation.seeds} "
              f"({len(candidates) * seeds} trials) as {exp}", flush=True)
    confirm_trials, seconds = run_ablation(ablation, base, resume, address, show, num_cpus)
    done = confirm_trials.to_pylist() if confirm_trials is not None else []
    ids = list(variants)
    report = ablation_report(done, ids, ids[0], metrics=(metric,))
    sign = 1 if mode == "max" else -1
    stats = {r["variant"]: r for r in report}
    order = sorted(ids, key=lambda t: -math.inf if not stats[t]["n"] else sign * stats[t]["mean"], reverse=True)
    winner, runner_up = order[0], order[1]
    if not stats[winner]["n"]:
        raise ConfigError(f"--confirm: no confirmation trial completed (see {exp}); rerun the command to resume it")
    paired = {r["variant"]: r for r in ablation_report(done, ids, runner_up, metrics=(metric,))}[winner]
    label = METRICS[metric].label if metric in METRICS else metric
    unit = "%" if metric in METRICS and METRICS[metric].direction == "max" else ""
    cands = []
    lines = [f"# chosen by --confirm {k} --seeds {seeds} over {root}: the top {len(candidates)} trials by {why},",
             f"# re-run on seeds {ablation.seeds} ({exp}); the best mean {label} wins:"]
    by_id = {r["trial_id"]: r for r in candidates}
    for t in order:
        s = stats[t]
        sweep_value = by_id[t].get(f"final_{metric}")
        cands.append({"trial_id": t, "sweep_value": sweep_value, "mean": s["mean"], "std": s["std"],
                      "ci95": (s["ci95_low"], s["ci95_high"]), "n": s["n"]})
        in_sweep = _fmt(None if sweep_value is None else 100 * sweep_value)
        lines.append(f"#   {t}: {_fmt(s['mean'])}{unit} ± {_fmt(s['std'])} (95% CI [{_fmt(s['ci95_low'])}, "
                     f"{_fmt(s['ci95_high'])}], n={s['n']}); in the sweep {in_sweep}{unit}")
    diff_ci = (paired["diff_ci95_low"], paired["diff_ci95_high"])
    lines.append(f"# winner {winner} vs runner-up {runner_up}: paired Δ {_fmt(paired['diff_vs_ref'])} "
                 f"(95% CI [{_fmt(diff_ci[0])}, {_fmt(diff_ci[1])}]), p = {_fmt(paired['p_paired'])} over "
                 f"{paired['n_pairs']} seeds; this file is the winner's sweep trial config")
    text = exported_config(by_id[winner], root, metric, header="\n".join(lines))
    write_export(text, out)
    return {"winner": winner, "runner_up": runner_up, "candidates": cands, "diff": paired["diff_vs_ref"],
            "diff_ci95": diff_ci, "p": paired["p_paired"], "n_pairs": paired["n_pairs"], "metric": metric,
            "rule": why, "store": str(exp), "seconds": seconds, "header": "\n".join(lines)}
