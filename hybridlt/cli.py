"""The ``hybridlt`` command line. Errors in what the user typed: one line on stderr, exit 2."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hybridlt import __version__
from hybridlt.data.long_tail import class_counts, shot_groups
from hybridlt.errors import HybridLTError, InputError
from hybridlt.sweep.config import ConfigError, load_run_config
from hybridlt.sweep.metrics import ACCURACY_METRICS, METRICS

console = Console(width=None if sys.stdout.isatty() else 140)


def _pct(value) -> str:
    return "-" if value is None or value != value else f"{100 * value:.2f}"


def group_of(c: int, groups: dict[str, list[int]]) -> str:
    return next(name for name, classes in groups.items() if c in classes)


def summary_table(metrics: dict, title: str = "test accuracy (%)") -> Table:
    table = Table(title=title)
    for m in ACCURACY_METRICS:
        table.add_column(METRICS[m].label, justify="right")
    table.add_row(*(_pct(metrics.get(m)) for m in ACCURACY_METRICS))
    return table


def per_class_report(metrics: dict, class_names, counts, groups) -> Table:
    table = Table(title=f"per-class accuracy, epoch {metrics['epoch']}")
    for col, just in (("class", "left"), ("name", "left"), ("train images", "right"), ("group", "left"),
                      ("accuracy %", "right")):
        table.add_column(col, justify=just)
    for c, acc in enumerate(metrics["per_class_acc"]):
        table.add_row(str(c), str(class_names[c]), str(counts[c]), group_of(c, groups), _pct(acc))
    return table


def cmd_train(args) -> int:
    from hybridlt.sweep.run import train_local

    if args.resume and args.set and not args.config and args.out:
        from hybridlt.sweep.run import recorded_with_overrides

        cfg = recorded_with_overrides(Path(args.out), args.set) or load_run_config(None, args.set)
    else:
        cfg = load_run_config(args.config, args.set) if args.config or args.set else None
    if args.out:
        out = Path(args.out)
    elif args.resume:
        raise ConfigError("train --resume: --out DIR is required (the run directory to continue)")
    else:
        out = Path("runs") / f"{cfg.name if cfg else 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
                        TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=console,
                        disable=args.quiet)
    state = {}

    def on_start(run_cfg, parts):
        state["task"] = progress.add_task("train", total=run_cfg.train.epochs,
                                          completed=parts.trainer.start_epoch, status="")
        console.print(f"run directory: {out.resolve()}  device: {parts.trainer.device}  "
                      f"steps/epoch: {parts.trainer.streams.steps_per_epoch}")

    def on_epoch(m):
        status = (f"loss {m['loss']:.3f}  alpha {m['alpha']:.2f}  acc {_pct(m.get('acc'))}%  "
                  f"few {_pct(m.get('few_acc'))}%  {m['epoch_time_s']:.1f}s/epoch")
        progress.update(state["task"], completed=m["epoch"], status=status)

    from hybridlt.sweep.run import SEEDS_FILE

    resuming_seeds = args.resume and (out / SEEDS_FILE).is_file()
    if args.seeds or args.fuse or resuming_seeds:
        return _train_seeds(args, cfg, out, progress, resuming_seeds)
    if args.workers:
        from hybridlt.sweep.run import train_distributed

        console.print(f"run directory: {out.resolve()}  Ray Train with {args.workers} DDP workers")
        train_distributed(cfg, out, args.workers, args.resume, args.cpus_per_worker, args.gpus_per_worker,
                          address=args.address)
        from hybridlt.sweep.run import last_epoch_from_store

        metrics, names, counts, groups, _ = last_epoch_from_store(out)
    else:
        with progress:
            metrics, parts = train_local(cfg, out, args.resume, on_epoch, on_start,
                                         warn=lambda msg: print(msg, file=sys.stderr))
        if not metrics:
            console.print(f"{out}: the run had already finished all its epochs")
            return 0
        names, counts, groups = parts.class_names, parts.class_counts, parts.groups
    console.print(per_class_report(metrics, names, counts, groups))
    console.print(summary_table(metrics, f"test accuracy (%) after {metrics['epoch']} epochs"))
    console.print(f"results: {out}/epochs, {out}/per_class (Parquet); config: {out}/config.yaml")
    return 0


def seeds_table(results: list[tuple[int, dict]], title: str) -> Table:
    """One row per seed and the mean ± sample std over seeds, for the accuracy metrics."""
    table = Table(title=title)
    table.add_column("seed", justify="right")
    for m in ACCURACY_METRICS:
        table.add_column(METRICS[m].label, justify="right")
    for seed, metrics in results:
        table.add_row(str(seed), *(_pct(metrics.get(m)) for m in ACCURACY_METRICS))
    if len(results) > 1:
        from hybridlt.sweep.paired import mean_ci

        stats = [mean_ci([r[m] for _, r in results if r.get(m) is not None])[:2] for m in ACCURACY_METRICS]
        table.add_row("mean ± sd", *(f"{_pct(mean)} ± {_pct(sd)}" for mean, sd in stats), style="bold")
    return table


def _train_seeds(args, cfg, out: Path, progress: Progress, resuming_seeds: bool) -> int:
    from hybridlt.sweep.run import last_epoch_from_store, seed_dir, train_seeds

    if args.fuse and not (args.seeds or resuming_seeds):
        raise ConfigError("--fuse: give the seeds it trains together, --seeds S1 S2 ... (or --resume a multi-seed "
                          "--out)")
    if args.workers:
        raise ConfigError(f"--workers: {args.workers} with --seeds/--fuse; a multi-seed run trains in this "
                          f"process, allowed: no --workers")
    from hybridlt.sweep.run import recorded_with_overrides

    known = cfg or (recorded_with_overrides(out, []) if resuming_seeds else None)
    epochs_total = known.train.epochs if known is not None else None
    tasks: dict[int, int] = {}

    def on_epoch(seed, m):
        if not tasks:  # said once the run has started: a refused start says only its error
            progress.console.print(f"run directory: {out.resolve()}  one run per seed in seed-<s>/"
                                   f"{'  fused: the seeds train as one vmapped model' if args.fuse else ''}")
        if seed not in tasks:
            tasks[seed] = progress.add_task("train", total=epochs_total, status="")
        status = f"seed {seed}  loss {m['loss']:.3f}  acc {_pct(m.get('acc'))}%  {m['epoch_time_s']:.1f}s/epoch"
        progress.update(tasks[seed], completed=m["epoch"], status=status)

    with progress:
        results = train_seeds(cfg, args.seeds, out, args.fuse, args.resume, on_epoch,
                              warn=lambda msg: print(msg, file=sys.stderr))
    results = [(s, m or last_epoch_from_store(seed_dir(out.resolve(), s))[0]) for s, m in results]
    epochs = max(m.get("epoch", 0) for _, m in results)
    console.print(seeds_table(results, f"test accuracy (%) after {epochs} epochs, {len(results)} seeds"))
    console.print(f"results: {out}/seed-<s>/epochs, per_class (Parquet); configs: {out}/seed-<s>/config.yaml")
    return 0


def cmd_data_stats(args) -> int:
    from hybridlt.sweep.build import load_dataset

    cfg = load_run_config(args.config, args.set)
    data = load_dataset(cfg.data)
    labels = data.train_labels.numpy()
    counts = class_counts(labels, data.num_classes)
    groups = shot_groups(counts, cfg.data.many_above, cfg.data.few_below)
    test_counts = class_counts(data.test_labels.numpy(), data.num_classes)
    table = Table(title=f"{cfg.data.dataset}: {sum(counts)} training images, {data.num_classes} classes, "
                        f"imbalance {max(counts) / max(1, min(counts)):.1f}")
    for col in ("class", "name", "train", "test", "group"):
        table.add_column(col, justify="left" if col in ("name", "group") else "right")
    rows = range(data.num_classes) if data.num_classes <= 200 else [*range(100), *range(data.num_classes - 100,
                                                                                         data.num_classes)]
    for c in rows:
        table.add_row(str(c), str(data.class_names[c]), str(counts[c]), str(test_counts[c]), group_of(c, groups))
    console.print(table)
    for name, classes in groups.items():
        console.print(f"{name}: {len(classes)} classes" + ("" if classes else " (empty: reported as missing)"))
    return 0


def _sweep_display(cb) -> None:
    """A live status line: trials done / running / stopped early / failed, and the best so far."""
    console.print(cb.progress_line(), highlight=False)


def best_trial(trials: list[dict], metric: str, mode: str, rule: str = "completed",
               epochs: list[dict] | None = None) -> dict | None:
    """``sweep.results.best_trial``: the best comparable trial and the rule that chose it, or None."""
    from hybridlt.sweep.results import best_trial as pick

    return pick(trials, metric, mode, rule, epochs)


def resume_command(argv: list[str]) -> str:
    """The exact command that continues this sweep: the one typed, with ``--resume``."""
    import shlex

    args = [a for a in argv if a != "--resume"]
    return shlex.join(["hybridlt", *args, "--resume"])


def trials_table(trials: list[dict], metric: str, mode: str, limit: int = 10) -> Table:
    key = f"final_{metric}"
    rows = sorted(trials, key=lambda t: -math.inf if t.get(key) is None else (t[key] if mode == "max" else -t[key]),
                  reverse=True)
    params = sorted({k for t in trials for k in t if k.startswith("param.")})
    table = Table(title=f"trials by final {metric} ({len(trials)} in all, top {min(limit, len(trials))})")
    shown = [m for m in ACCURACY_METRICS if m != "balanced_acc"]
    for col in ("trial", "status", "epochs", *[p.removeprefix("param.") for p in params],
                *[METRICS[m].label for m in shown]):
        table.add_column(col)
    for t in rows[:limit]:
        vals = [t["trial_id"], t["status"], str(t["epochs_done"])]
        vals += ["-" if t.get(p) is None else (f"{t[p]:.3g}" if isinstance(t[p], float) else str(t[p]))
                 for p in params]
        vals += [METRICS[m].show(t.get(f"final_{m}")) for m in shown]
        table.add_row(*vals)
    return table


def _stop_local_ray(address: str | None) -> float:
    """Shut down the Ray this command started (none with ``--address``); returns the seconds it took."""
    import ray

    if address or not ray.is_initialized():
        return 0.0
    from hybridlt.sweep.tuner import stop_ray

    start = time.perf_counter()
    stop_ray()
    return time.perf_counter() - start


def fixed_costs_line(timings: dict, address: str | None = None) -> str:
    """The sweep's fixed costs: imports, Ray start, Tune start to the first trial, shutdown."""
    def s(key):
        value = timings.get(key)
        return "-" if value is None or value != value else f"{value:.1f}s"

    parts = (f"fixed costs: imports {s('imports_s')}, Ray start {s('ray_start_s')}, Tune start to first trial "
             f"{s('tune_start_s')}, shutdown {s('shutdown_s')}")
    return parts if address else parts + " (--address of a running Ray skips Ray's start and shutdown)"


def cmd_sweep(args) -> int:
    from hybridlt.sweep.faults import pause_at
    from hybridlt.sweep.spec import load_sweep_spec
    from hybridlt.sweep.tuner import run_sweep

    spec, base = load_sweep_spec(args.spec, args.set)
    console.print(f"sweep {spec.name}: {spec.trials} trials, {spec.search.algorithm} search, "
                  f"{spec.scheduler.kind} scheduler, storage {spec.storage}")
    timings: dict = {}
    trials, seconds = run_sweep(spec, base, args.resume, args.address, _sweep_display, args.num_cpus,
                                resume_command=resume_command(args.argv), timings=timings)
    timings["shutdown_s"] = _stop_local_ray(args.address)
    pause_at("final_table")
    results = f"{spec.storage.rstrip('/')}/{spec.name}/results"
    print_final(trials, spec.objective.metrics[0], spec.objective.modes[0], args.rank_by, results)
    console.print(f"sweep wall time {seconds:.0f}s; {fixed_costs_line(timings, args.address)}; results: {results}",
                  highlight=False)
    if spec.search.algorithm != "grid":
        from hybridlt.sweep.study import hide_password, study_url

        console.print(f"optuna study {spec.name!r}: optuna-dashboard {hide_password(study_url(spec))}", highlight=False)
    from hybridlt.sweep.results import all_failed

    failed = all_failed(trials.to_pylist() if trials is not None else [])
    if failed:  # nothing to export: say why, not what is next
        print(f"error: sweep {spec.name!r}: {failed}; failed trials are final, so fix the cause and start it "
              f"under another name (--set name=...)", file=sys.stderr)
        return 1
    console.print(f"next: hybridlt export-best {results} -o best.yaml && hybridlt train --config best.yaml")
    return 0


def print_final(trials, metric: str, mode: str, rule: str, results: str) -> None:
    """The trials table and the best comparable trial, saying which rule chose it."""
    from hybridlt.sweep.results import read_dataset

    rows = trials.to_pylist() if trials is not None else []
    console.print(trials_table(rows, metric, mode))
    epochs = read_dataset(results, "epochs") if rule == "common-epoch" else None
    best = best_trial(rows, metric, mode, rule, epochs.to_pylist() if epochs is not None else None)
    if best is None:
        console.print(f"best trial: none comparable yet (rule: {rule}); --rank-by common-epoch ranks "
                      f"stopped-early trials too")
        return
    console.print(f"best trial: {best['trial_id']} ({best['status']}, {best['epochs_done']} epochs), "
                  f"chosen by {best['_rule']}")
    console.print(summary_table({k.removeprefix("final_"): v for k, v in best.items()},
                                f"best trial {best['trial_id']}: test accuracy (%)"))


def cmd_export_best(args) -> int:
    from hybridlt.sweep.results import export_best

    if args.confirm is not None:
        return _confirm_best(args)
    if args.seeds is not None:
        raise InputError("--seeds: only with --confirm K (the seeds each of the top K configs is re-run on)")
    best = export_best(args.results, args.output, args.metric, args.mode, args.force, args.rank_by)
    metric = best["_metric"]
    console.print(f"wrote {args.output}: trial {best['trial_id']}, final {metric} {_pct(best.get('final_' + metric))}%"
                  f", chosen by {best['_rule']}")
    return 0


def _confirm_best(args) -> int:
    from hybridlt.sweep.confirm import confirm_best

    res = confirm_best(args.results, args.output, args.confirm, args.seeds or 3, args.metric, args.mode, args.force,
                       args.rank_by, args.address, _sweep_display, args.num_cpus)
    unit = "%" if res["metric"] in ACCURACY_METRICS else ""
    table = Table(title=f"--confirm {args.confirm} --seeds {args.seeds or 3}: final {res['metric']} over new seeds")
    for col in ("trial", f"in the sweep{unit and ' (%)'}", f"mean{unit and ' (%)'}", "std", "95% CI", "n"):
        table.add_column(col, justify="left" if col == "trial" else "right")
    for c in res["candidates"]:
        lo, hi = c["ci95"]
        table.add_row(c["trial_id"] + (" (winner)" if c["trial_id"] == res["winner"] else ""),
                      _pct(c["sweep_value"]), _num(c["mean"]), _num(c["std"]), f"[{_num(lo)}, {_num(hi)}]", str(c["n"]))
    console.print(table)
    lo, hi = res["diff_ci95"]
    console.print(f"winner {res['winner']} vs runner-up {res['runner_up']}: paired Δ {_num(res['diff'])} "
                  f"(95% CI [{_num(lo)}, {_num(hi)}]), p = {_num(res['p'], 3)} over {res['n_pairs']} seeds",
                  highlight=False)
    console.print(f"wrote {args.output}: trial {res['winner']}, chosen by the best mean over new seeds of the top "
                  f"{len(res['candidates'])} by {res['rule']}; confirmation store {res['store']} "
                  f"({res['seconds']:.0f}s)", highlight=False)
    return 0


def _num(x, digits: int = 2) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"


def ablation_table(rows: list[dict], reference: str, title: str) -> Table:
    from hybridlt.sweep.ablate import report_cells

    header, body = report_cells(rows, with_ci=False)
    table = Table(title=f"{title}: mean ± std over seeds (%), paired t-test vs {reference}")
    for col in header:
        table.add_column(col, justify="left" if col == "variant" else "right")
    for row in body:
        table.add_row(*row)
    return table


def cmd_ablate(args) -> int:
    from hybridlt.sweep.ablate import load_ablation_spec, report_from_store, run_ablation, write_reports

    if args.report:
        store = args.report
    else:
        if not args.spec:
            raise ConfigError("ablate: give a SPEC to run, or --report STORE to rebuild the table of a finished one")
        spec, base = load_ablation_spec(args.spec, args.set)
        console.print(f"ablation {spec.name}: {len(spec.variants)} variants x {len(spec.seeds)} seeds "
                      f"= {len(spec.variants) * len(spec.seeds)} trials, storage {spec.storage}")
        _, seconds = run_ablation(spec, base, args.resume, args.address, _sweep_display, args.num_cpus)
        console.print(f"ablation wall time {seconds:.0f}s")
        store = f"{spec.storage.rstrip('/')}/{spec.name}"
    rows, reference, title, root = report_from_store(store, args.reference)
    console.print(ablation_table(rows, reference, title))
    md, csv_path = write_reports(rows, reference, title, root)
    console.print(f"wrote {md} and {csv_path}")
    return 0


def cmd_dashboard(args) -> int:
    from hybridlt.dashboards.app import run_dashboard

    run_dashboard(args.results, host=args.host, port=args.port, refresh_s=args.refresh)
    return 0


def user_message(exc: BaseException) -> str:
    """The error's own text; for an error re-raised from a DataLoader worker (whose message carries the
    worker's traceback), only the original exception's last line, without its class name."""
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    return last.split(": ", 1)[1] if last.split(": ", 1)[0].endswith(type(exc).__name__) else last


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridlt", epilog="README.md documents every verb; errors in what you type: one line, exit 2.",
        description="Long-tailed image classification with contrastive-learning hybrid networks: train one "
                    "config, sweep and ablate on Ray Tune, export the best config, explore the results in "
                    "a dashboard.")
    parser.add_argument("--version", action="version", version=f"hybridlt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one config in this process")
    train.add_argument("--config", help="run config YAML")
    train.add_argument("--set", action="append", default=[], metavar="a.b=value", help="override a config field")
    train.add_argument("--out", help="run directory (default: runs/<name>-<time>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--workers", type=int, help="run under Ray Train with this many DDP workers")
    train.add_argument("--cpus-per-worker", type=float, default=1.0)
    train.add_argument("--gpus-per-worker", type=float, default=0.0)
    train.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    train.add_argument("--seeds", type=int, nargs="+", metavar="S",
                       help="train once per seed, each run in OUT/seed-<s>, and report mean ± sd")
    train.add_argument("--fuse", action="store_true",
                       help="with --seeds: train the seeds together as one vmapped model (model/fused.py)")
    train.set_defaults(func=cmd_train)

    sweep = sub.add_parser("sweep", help="run (or --resume) a sweep spec on Ray Tune")
    sweep.add_argument("spec", help="sweep spec YAML")
    sweep.add_argument("--set", action="append", default=[], metavar="a.b=value", help="override a spec field")
    sweep.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same name")
    sweep.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    sweep.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    sweep.add_argument("--rank-by", choices=["completed", "common-epoch"], default="completed",
                       help="best trial: final value of completed trials (default), or every finished trial's "
                            "value at the latest epoch all reached")
    sweep.set_defaults(func=cmd_sweep)

    export = sub.add_parser("export-best", help="write the best trial's run config")
    export.add_argument("results", help="the sweep's results folder (or the sweep folder)")
    export.add_argument("--metric", help="default: the sweep's first objective")
    export.add_argument("--mode", choices=["max", "min"])
    export.add_argument("-o", "--output", required=True)
    export.add_argument("--force", action="store_true", help="overwrite --output")
    export.add_argument("--rank-by", choices=["completed", "common-epoch"], default="completed",
                        help="which trials are comparable (see hybridlt sweep --rank-by)")
    export.add_argument("--confirm", type=int, metavar="K",
                        help="re-run the top K configs on new seeds (an ablation beside the sweep, resumable) "
                             "and export the best mean")
    export.add_argument("--seeds", type=int, metavar="N", help="with --confirm: seeds per config (default 3)")
    export.add_argument("--address", help="with --confirm: a running Ray cluster (default: start a local one)")
    export.add_argument("--num-cpus", type=int, help="with --confirm: CPUs of the local Ray (default: all)")
    export.set_defaults(func=cmd_export_best)

    ablate = sub.add_parser("ablate", help="variants x seeds with mean ± std and paired tests")
    ablate.add_argument("spec", nargs="?", help="ablation spec YAML")
    ablate.add_argument("--set", action="append", default=[], metavar="a.b=value", help="override a spec field")
    ablate.add_argument("--resume", action="store_true", help="continue an interrupted ablation")
    ablate.add_argument("--report", metavar="STORE", help="rebuild the table of a finished ablation, without Ray")
    ablate.add_argument("--reference", help="variant to test against (default: the spec's reference)")
    ablate.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    ablate.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    ablate.set_defaults(func=cmd_ablate)

    dash = sub.add_parser("dashboard", help="serve the Dash app over one results store or several side by side")
    dash.add_argument("results", nargs="+", help="results folders (or sweep folders); several: side by side")
    dash.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    dash.add_argument("--port", type=int, default=8050)
    dash.add_argument("--refresh", type=float, default=5.0, help="seconds between looks for new trials")
    dash.set_defaults(func=cmd_dashboard)

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    stats = data_sub.add_parser("stats", help="class counts and many/medium/few groups")
    stats.add_argument("--config", required=True)
    stats.add_argument("--set", action="append", default=[], metavar="a.b=value")
    stats.set_defaults(func=cmd_data_stats)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM outside Tune's run (which has its own handler): stop as Ctrl-C would, saying how to continue."""

    def __init__(self, signum: int):
        super().__init__("terminated")
        self.signum = signum


def _term_as_interrupt() -> None:
    import signal
    import threading

    def handler(signum, frame):
        raise Terminated(signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    _term_as_interrupt()
    try:
        return args.func(args)
    except HybridLTError as exc:
        for line in user_message(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory: the config asks for more than this machine has; lower train.batch_size, "
              "train.eval_batch_size, model.proj_dim or the image sizes", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # torch's allocators raise RuntimeError subclasses
        if "out of memory" not in str(exc) and "can't allocate memory" not in str(exc):
            raise
        print(f"error: out of memory ({str(exc).splitlines()[0][:200]}); lower train.batch_size, "
              f"train.eval_batch_size, model.proj_dim or the image sizes", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        import signal

        message = getattr(exc, "message", None)
        if message is None:
            hint = f"\n  {resume_command(argv)}" if args.command in ("sweep", "ablate") else ""
            message = ("interrupted: finished trials and completed epochs are saved; continue with:"
                       f"{hint or ' --resume'}")
        print(message, file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
