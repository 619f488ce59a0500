"""Shared helpers of the benchmarks: timing, the device line, writing a Markdown table.

Benchmarks import only ``model/``, ``data/``, torch, torchvision, numpy and scikit-learn, so that
they run as they are on a bare GPU machine.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__})"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 1) -> float:
    """The fastest of ``repeats`` timed calls, after ``warmup`` untimed ones (seconds)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def write_table(name: str, title: str, header: list[str], rows: list[list], notes: list[str] = ()) -> str:
    """Print a Markdown table and write it to ``bench/results/<name>.md``; returns the text.

    ``HYBRIDLT_BENCH_TAG`` (set by bench/gpu.sh to the GPU's short name, e.g. ``h200``) replaces
    ``cuda`` in the file name, so figures of different GPUs sit side by side."""
    tag = os.environ.get("HYBRIDLT_BENCH_TAG")
    if tag:
        name = name.replace("cuda", tag)
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    lines += ["", *notes] if notes else []
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    return text
