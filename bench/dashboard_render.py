"""First render of the dashboard in a browser on a large synthetic store.

Generates (or reuses, ``--store``) a store of 1,000 trials x 1,000 classes x 20 epochs, measures the
store's cold queries in this process, then serves ``hybridlt dashboard`` in a subprocess on a free
loopback port and drives headless Chromium (Debian's ``chromium``, Playwright): the time from
navigation to every main chart drawn and the best config shown, in fresh browser contexts. Server
start is excluded (we wait for the page's layout to be served, then for the server's warm-up).
Writes ``bench/results/dashboard_render_cpu_<trials>x<classes>.md``. Needs Playwright and chromium
(not a bare GPU box).

Usage: python bench/dashboard_render.py [--store DIR] [--trials 1000 --classes 1000 --epochs 20]
       python bench/dashboard_render.py --trials 10000 --classes 100 --epochs 10
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hybridlt.dashboards import queries as q  # noqa: E402
from hybridlt.dashboards.app import GRAPHS  # noqa: E402
from tests.dashboards.synthetic import write_synthetic_store  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
RENDERED = """ids => ids.every(id => {
  const g = document.querySelector('#' + id + ' .js-plotly-plot');
  return g && g._fullLayout && g.data && g.data.length > 0; })
  && document.querySelector('#config-yaml').textContent.includes('-best')
  && document.querySelectorAll('#trials tr').length > 5"""
PAYLOAD = """() => performance.getEntriesByType('resource').filter(e => e.name.includes('_dash-update-component')
  || e.name.includes('_dash-layout')).reduce((s, e) => s + e.encodedBodySize, 0)"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def store_files(path: Path) -> tuple[int, float]:
    files = [f for f in path.rglob("*") if f.is_file()]
    return len(files), sum(f.stat().st_size for f in files) / 2**20


def cold_queries(store: Path) -> dict:
    """What the first view asks of the store, from a fresh cache (the OS page cache is warm)."""
    out = {}
    start = time.perf_counter()
    cache = q.ResultsCache(store)
    cache.refresh()
    out["list + trials"] = time.perf_counter() - start
    trials = cache.trials()
    t = time.perf_counter()
    per_class = cache.last_per_class()
    out["last per_class of every trial"] = time.perf_counter() - t
    t = time.perf_counter()
    q.class_matrix(per_class, q.order_trials(trials, "acc")["trial_id"].tolist()[:200])
    cache.epochs(q.order_trials(trials, "acc")["trial_id"].tolist()[:5])
    out["heatmap matrix + 5 trials' epochs"] = time.perf_counter() - t
    t = time.perf_counter()
    q.param_importance(trials, "acc")
    out["parameter importance"] = time.perf_counter() - t
    out["total"] = time.perf_counter() - start
    return out


def serve(store: Path, port: int) -> tuple[subprocess.Popen, float]:
    """``hybridlt dashboard`` in its own process; returns it and the seconds until it served the first
    layout, once its background warm-up has had time to finish."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "hybridlt.cli", "dashboard", str(store), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_dash-layout", timeout=60) as r:
                if r.status == 200:
                    up = time.perf_counter() - start
                    time.sleep(15)  # the server's background warm-up (first page: importance, per-class files)
                    return proc, up
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"dashboard exited: {proc.stderr.read().decode()[-2000:]}") from None
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("dashboard did not start in 180 s")


def render_times(url: str, runs: int, screenshot: Path | None) -> list[dict]:
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
        for i in range(runs):
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            start = time.perf_counter()
            page.goto(url)
            page.wait_for_function(RENDERED, arg=list(GRAPHS), timeout=120_000, polling=50)
            wall = time.perf_counter() - start
            out.append({"wall_s": wall, "browser_s": page.evaluate("() => performance.now()") / 1000,
                        "payload_kb": page.evaluate(PAYLOAD) / 1024})
            if i == 0 and screenshot:
                page.screenshot(path=str(screenshot), full_page=True)
            context.close()
        browser.close()
    return out


def report(args, size: tuple[int, float], gen_s: float | None, up_s: float, cold: dict, runs: list[dict]) -> str:
    n_files, mb = size
    first = runs[0]["wall_s"]
    rest = [r["wall_s"] for r in runs[1:]] or [first]
    lines = [
        f"# Dashboard first render ({platform.machine()}, {os.cpu_count()} CPUs, headless Chromium, "
        f"{args.trials:,} trials x {args.classes:,} classes x {args.epochs} epochs)", "",
        f"Store: {n_files:,} Parquet files, {mb:.0f} MiB"
        + (f", generated in {gen_s:.0f} s by `dashboards.synthetic`" if gen_s else "") + ". "
        f"Load average when measured: {os.getloadavg()[0]:.1f}.", "",
        "First render: navigation to every main chart drawn (head/medium/tail by group, heatmap, accuracy vs "
        "rank, parallel coordinates, importance, slices, history, learning curves), the trials table filled and "
        "the best config shown; each run in a fresh browser context; server start excluded.", "",
        "| run | first render (s) | in-browser performance.now() (s) | Dash payload (KiB) |", "|---|---|---|---|",
        *[f"| {i + 1} | {r['wall_s']:.2f} | {r['browser_s']:.2f} | {r['payload_kb']:.0f} |"
          for i, r in enumerate(runs)],
        "", f"first run {first:.2f} s; median of the others {statistics.median(rest):.2f} s (target: under 3 s).", "",
        "Cold queries of the store in a fresh process-side cache, done once at server start and incremental "
        "after (the OS file cache is warm: the store was just written or read):", "",
        "| step | s |", "|---|---|", *[f"| {k} | {v:.2f} |" for k, v in cold.items()], "",
        f"Server start (`hybridlt dashboard` process start to its first page layout served, cold store): "
        f"{up_s:.1f} s.", "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="store folder to reuse, or to create when missing (default: a temp dir)")
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--screenshot", help="save the first view here (PNG)")
    parser.add_argument("--out", help="report file (default: bench/results/dashboard_render_cpu_<T>x<C>.md)")
    args = parser.parse_args()
    args.out = args.out or str(ROOT / "bench" / "results" / f"dashboard_render_cpu_{args.trials}x{args.classes}.md")
    tmp = None
    store = Path(args.store) if args.store else Path(tmp := tempfile.mkdtemp(prefix="dash-bench-")) / "results"
    gen_s = None
    if not (store / "trials").is_dir():
        start = time.perf_counter()
        write_synthetic_store(store, args.trials, args.classes, args.epochs, stopped=0.0,  # every trial all epochs
                              workers=os.cpu_count() or 1)
        gen_s = time.perf_counter() - start
        print(f"generated {store} in {gen_s:.0f} s")
    cold = cold_queries(store)
    print("cold queries:", {k: round(v, 2) for k, v in cold.items()})
    size = store_files(store)
    port = free_port()
    proc, up_s = serve(store, port)
    try:
        runs = render_times(f"http://127.0.0.1:{port}/", args.runs, Path(args.screenshot) if args.screenshot else None)
    finally:
        proc.terminate()
        proc.wait(10)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    text = report(args, size, gen_s, up_s, cold, runs)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
