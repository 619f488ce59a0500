"""The quickstart search through ``hybridlt sweep`` vs plain Optuna in one process.

Both sides run configs/sweeps/quickstart.yaml's search: the same define-by-run space
(``sweep.searcher.DefineByRun``), TPE with the spec's seed, the same epochs, and the same trainer
(``sweep.build.build_run`` + ``Trainer.fit``). Early stopping: ASHA (grace period, reduction
factor of the spec) in the sweep; Optuna's ``SuccessiveHalvingPruner`` with the same minimum
resource and reduction factor in the plain run. Each side is a fresh process timed from launch to
exit (imports included). The sweep runs ``concurrency`` trials at once with 1 CPU each; Optuna runs
one trial at a time with as many intra-op threads as the sweep has CPUs in all.

Runs are interleaved (sweep, Optuna, sweep without reused actors; the order rotates each round) and
the table gives medians over rounds:

- wall ratio: sweep wall / Optuna wall;
- slot utilisation: sum over trials of ``epoch_time_s + eval_time_s`` / (wall x slots), with slots
  = concurrency for the sweep and 1 for Optuna;
- best accuracy: the best final test accuracy over all trials (stopped trials count with their
  last one).

Needs Ray and Optuna: run it on the development machine.

    python bench/sweep_vs_optuna.py [--rounds 2] [--variants reuse optuna noreuse pending1]

``--cpu-split``: CPU-seconds of every process of the run (polled with psutil every 0.2 s over the
process tree), grouped as trial processes, the driver, Ray's daemons (GCS, raylet, dashboard and its
agents, monitors) and idle workers: where the two cores go besides training.

``pending1``: reused actors with one trial staged at a time, as Tune does for a searcher it does not
see wrapped in a ConcurrencyLimiter (the sweep before ``tuner.pending_trials``). ``dashboard``: Ray's
dashboard started although no trial runs Ray Train workers (the sweep before it was started only for them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "configs" / "sweeps" / "quickstart.yaml"
sys.path.insert(0, str(ROOT))


def load_avg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


CPU_POLL_S = 0.2


def _cpu_group(is_root: bool, cmdlines: set, root_group: str) -> str:
    """The group of one process of a run: the root, or by the command lines it showed (Ray retitles
    its workers: ``ray::IDLE``, ``ray::ImplicitFunc.train``)."""
    if is_root:
        return root_group
    cmd = " ".join(cmdlines)
    titles = {c.split(" ")[0] for c in cmdlines}
    if "gcs_server" in cmd:
        return "Ray GCS"
    if any(t.endswith("raylet") for t in titles):
        return "raylet"
    if "dashboard" in cmd or "runtime_env" in cmd:
        return "dashboard + agents"
    if "monitor" in cmd:
        return "Ray monitors"
    if any("ImplicitFunc" in t for t in titles):  # Tune's function trainable
        return "trial processes"
    ray_titles = {t for t in titles if t.startswith("ray::")}
    if ray_titles and ray_titles != {"ray::IDLE"}:
        return "other Ray actors"
    if ray_titles:
        return "idle Ray workers"
    return "other"


def run_with_cpu_split(argv: list[str], env: dict, split: bool, root_group: str = "driver", **kwargs):
    """``subprocess.run`` of ``argv``; with ``split``, also CPU-seconds (user + system) per process group
    of its tree, each process's last reading before it exited."""
    if not split:
        return subprocess.run(argv, env=env, **kwargs), {}
    import threading

    import psutil

    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE if kwargs.get("capture_output") else None,
                            stderr=subprocess.PIPE if kwargs.get("capture_output") else None,
                            text=kwargs.get("text", False))
    seen: dict[int, dict] = {}
    done = threading.Event()

    def poll():
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for p in tree:
                try:
                    with p.oneshot():
                        cpu = p.cpu_times()
                        cmdline = p.cmdline()
                    entry = seen.setdefault((p.pid, p.create_time()), {"cmdlines": set(), "root": p.pid == proc.pid})
                    entry["cpu"] = cpu.user + cpu.system
                    entry["cmdlines"].add(" ".join(cmdline))
                except psutil.Error:
                    continue
            done.wait(CPU_POLL_S)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    out, err = proc.communicate()
    done.set()
    thread.join()
    groups: dict[str, float] = {}
    for entry in seen.values():
        group = _cpu_group(entry["root"], entry["cmdlines"], root_group)
        groups[group] = groups.get(group, 0.0) + entry.get("cpu", 0.0)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), groups


def optuna_child(spec_path: Path, out: Path) -> None:
    """Plain Optuna, one process: the sweep's space, sampler and pruning rule around the same trainer."""
    import optuna
    import torch

    from hybridlt.sweep.build import build_run
    from hybridlt.sweep.isolation import reset_trial_process
    from hybridlt.sweep.searcher import DefineByRun
    from hybridlt.sweep.spec import apply_params, load_sweep_spec
    from hybridlt.sweep.tuner import _milestones

    spec, base = load_sweep_spec(spec_path)
    cpus = (spec.concurrency or 1) * spec.resources.cpus_per_worker
    space = DefineByRun(spec, base.model_dump(mode="json"))
    milestones = frozenset(_milestones(spec, base))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=spec.search.seed)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=spec.scheduler.grace_period,
                                                    reduction_factor=int(spec.scheduler.reduction_factor),
                                                    min_early_stopping_rate=0)
    study = optuna.create_study(direction="maximize" if spec.objective.modes[0] == "max" else "minimize",
                                sampler=sampler, pruner=pruner)
    metric = spec.objective.metrics[0]
    busy, finals, epochs = [], [], []

    def objective(trial):
        space(trial)
        cfg = apply_params(base, dict(trial.params))
        reset_trial_process(cfg.seed, cpus)
        parts = build_run(cfg)
        parts.trainer.milestones = milestones
        last = {"value": None, "busy": 0.0, "epochs": 0}

        def report(metrics, _state):
            last["busy"] += metrics["epoch_time_s"] + metrics["eval_time_s"]
            last["epochs"] = metrics["epoch"]
            if metric in metrics:
                last["value"] = metrics[metric]
                trial.report(metrics[metric], metrics["epoch"])
                if trial.should_prune():
                    raise optuna.TrialPruned()

        try:
            parts.trainer.fit(report)
        finally:
            busy.append(last["busy"])
            finals.append(last["value"])
            epochs.append(last["epochs"])
        return last["value"]

    torch.set_num_threads(int(cpus))
    study.optimize(objective, n_trials=spec.trials)
    out.write_text(json.dumps({"busy_s": sum(busy), "best": max(v for v in finals if v is not None),
                               "epochs": sum(epochs), "slots": 1}))


def run_optuna(spec_path: Path, split: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        start = time.perf_counter()
        proc, cpu = run_with_cpu_split([sys.executable, __file__, "--optuna-child", str(spec_path), str(out)],
                                       {**os.environ, "PYTHONPATH": str(ROOT)}, split, "trial processes")
        wall = time.perf_counter() - start
        proc.check_returncode()
        return {**json.loads(out.read_text()), "wall_s": wall, "fixed": "", "cpu": cpu}


def run_sweep_cli(spec_path: Path, reuse: bool, storage: Path, name: str, extra_env: dict | None = None,
                  split: bool = False) -> dict:
    from hybridlt.sweep.results import read_dataset
    from hybridlt.sweep.spec import load_sweep_spec

    spec, _ = load_sweep_spec(spec_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYBRIDLT_REUSE_ACTORS": "1" if reuse else "0",
           **(extra_env or {})}
    start = time.perf_counter()
    proc, cpu = run_with_cpu_split([sys.executable, "-m", "hybridlt.cli", "sweep", str(spec_path), "--set",
                                    f"name={name}", "--set", f"storage={storage}"], env, split,
                                   capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"hybridlt sweep failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    fixed = next((line.split("; ")[1].split(" (--address")[0].strip() for line in proc.stdout.splitlines()
                  if "fixed costs" in line), "")
    results = storage / name / "results"
    epochs = read_dataset(results, "epochs").to_pylist()
    trials = read_dataset(results, "trials").to_pylist()
    metric = spec.objective.metrics[0]
    return {"wall_s": wall, "busy_s": sum(r["epoch_time_s"] + (r["eval_time_s"] or 0) for r in epochs),
            "best": max(r[f"final_{metric}"] for r in trials if r[f"final_{metric}"] is not None),
            "epochs": len(epochs), "slots": spec.concurrency or 1, "fixed": fixed, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--spec", default=str(SPEC))
    parser.add_argument("--variants", nargs="+", default=["reuse", "optuna", "noreuse"],
                        choices=["reuse", "optuna", "noreuse", "pending1", "dashboard"])
    parser.add_argument("--cpu-split", action="store_true",
                        help="CPU-seconds per process group of each run (psutil, every 0.2 s)")
    parser.add_argument("--optuna-child", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.optuna_child:
        optuna_child(Path(args.optuna_child[0]), Path(args.optuna_child[1]))
        return
    spec_path = Path(args.spec).resolve()
    runs: dict[str, list[dict]] = {v: [] for v in args.variants}
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = args.variants[r % len(args.variants):] + args.variants[:r % len(args.variants)]
            for variant in order:
                before = load_avg()
                if variant == "optuna":
                    res = run_optuna(spec_path, args.cpu_split)
                else:
                    res = run_sweep_cli(spec_path, variant != "noreuse", Path(tmp), f"bench-{variant}-{r}",
                                        {"pending1": {"TUNE_MAX_PENDING_TRIALS_PG": "1"},
                                         "dashboard": {"HYBRIDLT_RAY_DASHBOARD": "1"}}.get(variant),
                                        args.cpu_split)
                res["load"] = f"{before} -> {load_avg()}"
                res["util"] = res["busy_s"] / (res["wall_s"] * res["slots"])
                runs[variant].append(res)
                loads.append(res["load"])
                report(runs, loads, r + 1, spec_path)  # after every run: a cut-short benchmark keeps its rows
                cpu = ", ".join(f"{g} {v:.1f}" for g, v in sorted(res["cpu"].items(), key=lambda kv: -kv[1]))
                print(f"round {r + 1} {variant}: wall {res['wall_s']:.1f}s util {res['util']:.2f} "
                      f"best {100 * res['best']:.2f}% epochs {res['epochs']} load {res['load']} {res['fixed']}"
                      + (f"; CPU-s: {cpu}" if cpu else ""),
                      flush=True)


def report(runs: dict, loads: list, rounds: int, spec_path: Path) -> None:
    from common import write_table

    from hybridlt.sweep.spec import load_sweep_spec

    trials = load_sweep_spec(spec_path)[0].trials
    runs = {v: rs for v, rs in runs.items() if rs}
    label = {"reuse": "hybridlt sweep (reuse_actors, the default)",
             "noreuse": "hybridlt sweep, HYBRIDLT_REUSE_ACTORS=0", "optuna": "plain Optuna, one process",
             "pending1": "hybridlt sweep, TUNE_MAX_PENDING_TRIALS_PG=1 (Tune's default for our searcher)",
             "dashboard": "hybridlt sweep, HYBRIDLT_RAY_DASHBOARD=1 (Ray's dashboard started anyway)"}
    optuna_wall = statistics.median(x["wall_s"] for x in runs["optuna"]) if runs.get("optuna") else None
    rows = []
    for variant, rs in runs.items():
        wall = statistics.median(x["wall_s"] for x in rs)
        rows.append([label[variant], " / ".join(f"{x['wall_s']:.1f}" for x in rs), f"{wall:.1f}",
                     f"{wall / optuna_wall:.2f}" if optuna_wall else "-",
                     f"{statistics.median(x['util'] for x in rs):.2f}",
                     f"{100 * statistics.median(x['best'] for x in rs):.2f}",
                     f"{statistics.median(x['epochs'] for x in rs):.0f}"])
    fixed = [f"- {label[v]}, round {i + 1}: {x['fixed']}" for v, rs in runs.items() for i, x in enumerate(rs)
             if x["fixed"]]
    notes = [f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, shared with other jobs; load average "
             f"(1, 5, 15 min) before -> after each run: {'; '.join(loads)}.",
             f"{rounds} interleaved rounds (order rotating); wall from process launch to exit; ratio = median "
             "wall / median Optuna wall; utilisation = sum of epoch_time_s + eval_time_s / (wall x slots), slots = "
             "the sweep's concurrency (1 CPU each) or 1 for Optuna (all CPUs as intra-op threads); best = best "
             f"final test accuracy over the {trials} trials.", "", "Fixed costs from the sweep's summary line:", *fixed]
    split = [(v, rs) for v, rs in runs.items() if any(x.get("cpu") for x in rs)]
    if split:
        groups = sorted({g for _, rs in split for x in rs for g in x["cpu"]})
        notes += ["", "CPU-seconds by process group (median over rounds; psutil every 0.2 s; available = wall x "
                  f"{os.cpu_count()} CPUs):", "",
                  "| run | available | " + " | ".join(groups) + " | sum | trial work (epoch + eval s) |",
                  "|" + "---|" * (len(groups) + 4)]
        for v, rs in split:
            med = {g: statistics.median(x["cpu"].get(g, 0.0) for x in rs) for g in groups}
            notes.append(f"| {label[v]} | {statistics.median(x['wall_s'] for x in rs) * os.cpu_count():.1f} | "
                         + " | ".join(f"{med[g]:.1f}" for g in groups)
                         + f" | {statistics.median(sum(x['cpu'].values()) for x in rs):.1f}"
                         f" | {statistics.median(x['busy_s'] for x in rs):.1f} |")
    write_table("sweep_vs_optuna", "Quickstart search: hybridlt sweep vs plain Optuna in one process",
                ["run", "wall per round (s)", "median wall (s)", "ratio to Optuna", "slot utilisation",
                 "best acc (%)", "epochs trained"], rows, notes)


if __name__ == "__main__":
    main()
