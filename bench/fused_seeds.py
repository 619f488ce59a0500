"""Whole runs: ``hybridlt train --seeds …`` with the seeds one after another vs fused (``--fuse``).

The quickstart config (digits-LT, resnet8, batch 128) for ``--epochs`` epochs, K seeds, in this
process; separate and fused runs interleaved, ``--rounds`` rounds, the order flipping each round;
the table gives the median wall time of each, their ratio and the mean final accuracy of each
(equal up to float rounding, which grows over epochs as between runs on 1 thread and on 2).
Needs the installed package (pydantic): run it on the development machine;
``bench/fused_trials.py`` measures step rates with torch alone (for a GPU).

    python bench/fused_seeds.py [--counts 2 4] [--epochs 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, device_name, write_table

from hybridlt.api import train_seeds


def one(k: int, epochs: int, fuse: bool, root: Path) -> tuple[float, float]:
    out = root / f"k{k}-{'fused' if fuse else 'separate'}-{time.monotonic_ns()}"
    start = time.perf_counter()
    runs = train_seeds(ROOT / "configs" / "quickstart.yaml", list(range(k)), [f"train.epochs={epochs}"], out, fuse)
    return time.perf_counter() - start, statistics.mean(r.metrics["acc"] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.counts:
            walls = {False: [], True: []}
            accs = {False: [], True: []}
            one(k, 3, False, Path(tmp))  # warm-up: imports, the dataset's first build
            for r in range(args.rounds):
                for fuse in ((False, True) if r % 2 == 0 else (True, False)):
                    wall, acc = one(k, args.epochs, fuse, Path(tmp))
                    walls[fuse].append(wall)
                    accs[fuse].append(acc)
            sep, fus = statistics.median(walls[False]), statistics.median(walls[True])
            rows.append([k, f"{sep:.2f}", f"{fus:.2f}", f"{sep / fus:.2f}", f"{accs[False][0]:.4f}",
                         f"{accs[True][0]:.4f}", ", ".join(f"{a:.1f}/{b:.1f}" for a, b in
                                                            zip(walls[False], walls[True], strict=True))])
    cpu = device_name(torch.device("cpu"))
    write_table("fused_seeds_cpu", f"Seeds one after another vs fused, whole runs, on {cpu}",
                ["seeds", "separate s (median)", "fused s (median)", "speed-up", "mean acc separate",
                 "mean acc fused", "rounds (separate/fused s)"], rows,
                [f"configs/quickstart.yaml, {args.epochs} epochs, `hybridlt.train_seeds` in one process, "
                 f"{os.cpu_count()} intra-op threads; {args.rounds} interleaved rounds, order flipped each round; "
                 f"load average before {load_before:.2f}, after {os.getloadavg()[0]:.2f}."])


if __name__ == "__main__":
    main()
