"""The ``hybridlt`` command line. Errors in what the user typed: one line on stderr, exit 2."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from data.cifar import DatasetFilesError
from data.image_list import ImageListError
from data.long_tail import class_counts, shot_groups
from model.checkpoint import CheckpointError
from sweep.config import ConfigError, load_run_config

console = Console()
USER_ERRORS = (ConfigError, DatasetFilesError, ImageListError, CheckpointError, FileExistsError)


def _pct(value) -> str:
    return "-" if value is None or value != value else f"{100 * value:.2f}"


def group_of(c: int, groups: dict[str, list[int]]) -> str:
    return next(name for name, classes in groups.items() if c in classes)


def summary_table(metrics: dict, title: str = "test accuracy (%)") -> Table:
    table = Table(title=title)
    for col in ("overall", "balanced", "many", "medium", "few"):
        table.add_column(col, justify="right")
    table.add_row(*(_pct(metrics.get(k)) for k in ("acc", "balanced_acc", "many_acc", "medium_acc", "few_acc")))
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
    from sweep.run import train_local

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
        status = (f"loss {m['loss']:.3f}  alpha {m['alpha']:.2f}  acc {_pct(m['acc'])}%  "
                  f"few {_pct(m.get('few_acc'))}%  {m['epoch_time_s']:.1f}s/epoch")
        progress.update(state["task"], completed=m["epoch"], status=status)

    with progress:
        metrics, parts = train_local(cfg, out, args.resume, on_epoch, on_start,
                                     warn=lambda msg: print(msg, file=sys.stderr))
    if not metrics:
        console.print(f"{out}: the run had already finished all its epochs")
        return 0
    console.print(per_class_report(metrics, parts.class_names, parts.class_counts, parts.groups))
    console.print(summary_table(metrics, f"test accuracy (%) after {metrics['epoch']} epochs"))
    console.print(f"results: {out}/epochs, {out}/per_class (Parquet); config: {out}/config.yaml")
    return 0


def cmd_data_stats(args) -> int:
    from sweep.build import load_dataset

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridlt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one config in this process")
    train.add_argument("--config", help="run config YAML")
    train.add_argument("--set", action="append", default=[], metavar="a.b=value", help="override a config field")
    train.add_argument("--out", help="run directory (default: runs/<name>-<time>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    stats = data_sub.add_parser("stats", help="class counts and many/medium/few groups")
    stats.add_argument("--config", required=True)
    stats.add_argument("--set", action="append", default=[], metavar="a.b=value")
    stats.set_defaults(func=cmd_data_stats)
    return parser


def main(argv: list[str] | None = None) -> int:
    from sweep.run import RunDirError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (*USER_ERRORS, RunDirError) as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: completed epochs are saved; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
