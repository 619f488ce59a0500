"""A long soak: 60 tiny digits-LT trials, two at a time on 2 CPUs, through the real sweep driver,
with ASHA stopping many early (the path that used to leak placement groups). Afterwards: placement
groups still alive (Ray's State API), Ray worker processes still running, and the driver's memory
at the first, middle and last trial. Needs Ray (like sweep_overhead.py).

    python bench/soak.py [--trials 60] [--workers 1]
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from ray.tune import Callback  # noqa: E402

from hybridlt.sweep.results import read_dataset  # noqa: E402
from hybridlt.sweep.spec import SweepSpec, load_base  # noqa: E402
from hybridlt.sweep.tuner import run_sweep, start_ray  # noqa: E402


class Memory(Callback):
    """Driver RSS and the machine's used memory each time a trial ends."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.samples.append((psutil.Process().memory_info().rss / 2**20, psutil.virtual_memory().used / 2**20))


def ray_processes() -> int:
    return sum(1 for p in psutil.process_iter(["name", "cmdline"])
               if "ray::" in " ".join(p.info.get("cmdline") or []) or (p.info.get("name") or "").startswith("ray::"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--workers", type=int, default=1, help="DDP workers per trial (2 = the Ray Train path)")
    args = parser.parse_args()
    start_ray(None, trial_slots=2)
    import ray
    from ray.util.state import list_placement_groups

    with tempfile.TemporaryDirectory() as storage:
        spec = SweepSpec.model_validate({
            "name": "soak", "storage": storage, "base": str(ROOT / "configs" / "quickstart.yaml"),
            "overrides": ["train.epochs=6", "optim.warmup_epochs=0", "data.max_count=60", "model.backbone=resnet8"],
            "space": {"loss.contrastive": {"choice": ["sc", "psc", "mpsc"]},
                      "loss.temperature": {"loguniform": [0.05, 1.0]}},
            "scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
            "search": {"algorithm": "random"}, "trials": args.trials, "concurrency": 2 // args.workers or 1,
            "resources": {"workers": args.workers},
        })
        memory = Memory()
        start = time.time()
        trials, wall = run_sweep(spec, load_base(spec, ROOT), callbacks=[memory])
        time.sleep(5)  # let Ray finish tearing down the last trial
        rows = trials.to_pylist()
        alive = [pg for pg in list_placement_groups() if pg.state != "REMOVED"]
        statuses = {s: sum(r["status"] == s for r in rows)
                    for s in ("completed", "stopped_early", "interrupted", "failed")}
        epochs = read_dataset(Path(storage) / "soak" / "results", "epochs").num_rows
    leftover = ray_processes()
    first, mid, last = memory.samples[0], memory.samples[len(memory.samples) // 2], memory.samples[-1]
    lines = [
        f"# Soak: {args.trials} tiny trials on {platform.machine()} with 2 CPUs, {args.workers} worker(s) per trial",
        "", "| measure | value |", "|---|---|",
        f"| trials in the store | {len(rows)} ({statuses['completed']} completed, {statuses['stopped']} stopped "
        f"by ASHA, {statuses['failed']} failed) |",
        f"| epoch rows | {epochs} |",
        f"| sweep wall time | {wall:.0f} s ({time.time() - start:.0f} s with teardown) |",
        f"| placement groups not removed afterwards | {len(alive)} |",
        f"| ray:: worker processes alive afterwards, before `ray.shutdown()` (Ray's idle worker pool) | {leftover} |",
        f"| driver RSS at trial 1 / {len(memory.samples) // 2 + 1} / {len(memory.samples)} (MiB) | "
        f"{first[0]:.0f} / {mid[0]:.0f} / {last[0]:.0f} |",
        f"| machine used memory at the same points (MiB) | {first[1]:.0f} / {mid[1]:.0f} / {last[1]:.0f} |",
        f"| driver peak RSS (MiB) | {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "bench" / "results" / f"soak_cpu_{args.workers}worker.md"
    ray.shutdown()
    time.sleep(3)
    text += f"| ray:: processes after `ray.shutdown()` | {ray_processes()} |\n"
    print(text.splitlines()[-1])
    out.write_text(text)


if __name__ == "__main__":
    main()
