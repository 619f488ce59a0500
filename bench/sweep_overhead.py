"""Per-trial overhead of a sweep on this machine, for both trial paths.

Runs the same tiny digits-LT sweep (concurrency 1, no early stopping) once with trials run in the
Tune trial itself (direct) and once through a Ray Train TorchTrainer with one worker, and reports
from driver-side timestamps: trial start to first report, minus the first epoch's own work (the
overhead), and whole trial time. Needs Ray (unlike the other benchmarks): run it here, not on a
bare GPU machine.  Usage: python bench/sweep_overhead.py [--trials 4] [--epochs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ray.tune import Callback  # noqa: E402

from hybridlt.sweep.results import read_dataset  # noqa: E402
from hybridlt.sweep.spec import SweepSpec, load_base  # noqa: E402
from hybridlt.sweep.tuner import run_sweep, start_ray  # noqa: E402


class Stamps(Callback):
    def __init__(self):
        self.start, self.first, self.end = {}, {}, {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.start[trial.trial_id] = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.first.setdefault(trial.trial_id, time.time())

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.end[trial.trial_id] = time.time()


def measure(path_name: str, use_train: bool, trials: int, epochs: int, storage: str) -> dict:
    spec = SweepSpec.model_validate({
        "name": path_name, "storage": storage, "base": str(ROOT / "configs" / "quickstart.yaml"),
        "overrides": [f"train.epochs={epochs}", "optim.warmup_epochs=0"],
        "space": {"loss.temperature": {"loguniform": [0.05, 1.0]}}, "scheduler": {"kind": "none"},
        "trials": trials, "concurrency": 1, "resources": {"workers": 1, "use_train": use_train},
    })
    base = load_base(spec, ROOT)
    stamps = Stamps()
    _, wall = run_sweep(spec, base, callbacks=[stamps])
    epochs_t = read_dataset(Path(storage) / path_name / "results", "epochs").to_pandas()
    first_work = epochs_t[epochs_t.epoch == 1].set_index("trial_id")
    work = epochs_t.groupby("trial_id")[["epoch_time_s", "eval_time_s"]].sum().sum(axis=1)
    first_epoch = first_work["epoch_time_s"] + first_work["eval_time_s"]
    overhead = [stamps.first[t] - stamps.start[t] - first_epoch.loc[t] for t in stamps.start]
    total = [stamps.end[t] - stamps.start[t] for t in stamps.start]
    return {"path": path_name, "overhead_s": statistics.median(overhead), "trial_s": statistics.median(total),
            "train_work_s": float(work.median()), "sweep_wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "sweep_overhead_cpu.md"))
    args = parser.parse_args()
    start_ray(None, trial_slots=2)
    with tempfile.TemporaryDirectory() as storage:
        rows = [measure("direct", False, args.trials, args.epochs, storage),
                measure("train", True, args.trials, args.epochs, storage)]
    import platform

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    lines = [f"# Per-trial overhead ({machine}, {args.trials} trials x {args.epochs} epochs of digits-LT, "
             "concurrency 1; medians)", "",
             "| path | start to first report minus epoch 1 work (s) | whole trial (s) | training + eval work (s) |",
             "|---|---|---|---|"]
    lines += [f"| {r['path']} | {r['overhead_s']:.2f} | {r['trial_s']:.2f} | {r['train_work_s']:.2f} |" for r in rows]
    lines += ["", f"ratio of overheads, train / direct: {rows[1]['overhead_s'] / rows[0]['overhead_s']:.1f}x"]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
