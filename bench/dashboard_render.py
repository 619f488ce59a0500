"""First render of the dashboard on a large synthetic store: server-side time and bytes, and (``--browser``)
the time to every chart drawn in headless Chromium.

Generates (or reuses, ``--store``) a store of 1,000 trials x 1,000 classes x 20 epochs by default.

Server side, in this process, as a visitor meets the server: the app built (`hybridlt dashboard`'s start:
the store read), the first page layout after the start (it waits for the background warm-up that
makes the first view), then ``--runs`` fresh visits through Flask's test client: ``/``, ``/_dash-layout``,
``/_dash-dependencies`` and every callback Dash fires when a page opens (those without
``prevent_initial_call``, their inputs taken from the layout), timed, with their bytes. Also the first
view made from scratch on the read store (what a visitor waits for right after the store changed),
and the payload split by component.

``--browser`` serves ``hybridlt dashboard`` in a subprocess and drives Debian's ``chromium`` (Playwright):
navigation to every main chart drawn, the table filled and the best config shown, in fresh contexts.

Writes ``bench/results/dashboard_render_cpu_<trials>x<classes>.md``.

Usage: python bench/dashboard_render.py [--store DIR] [--trials 1000 --classes 1000 --epochs 20] [--browser]
       python bench/dashboard_render.py --trials 10000 --classes 100 --epochs 3
"""

from __future__ import annotations

import argparse
import json
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

import plotly  # noqa: E402

from hybridlt.dashboards import app as A  # noqa: E402
from hybridlt.dashboards.app import FIRST_TAB, TABS  # noqa: E402
from tests.dashboards.synthetic import write_synthetic_store  # noqa: E402

REFRESH_S = 5.0  # the dashboard's default
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TAB_DRAWN = """ids => ids.every(id => {
  const g = document.querySelector('#' + id + ' .js-plotly-plot');
  return g && g._fullLayout && g.data && g.data.length > 0; })"""
RENDERED = TAB_DRAWN + """
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


# ---- server side --------------------------------------------------------------------------------
def _find(node, cid):
    """The component dict with this id in a layout's JSON."""
    if isinstance(node, dict):
        props = node.get("props", {})
        if props.get("id") == cid:
            return props
        return _find(props.get("children"), cid)
    if isinstance(node, list):
        for child in node:
            hit = _find(child, cid)
            if hit is not None:
                return hit
    return None


def _outputs(spec: str) -> list[dict]:
    parts = spec.strip(".").split("...") if spec.startswith("..") else [spec]
    out = []
    for p in parts:
        cid, prop = p.rsplit(".", 1)
        out.append({"id": cid, "property": prop.split("@")[0]})
    return out


def initial_callbacks(client, layout: dict, deps: list[dict]) -> tuple[int, int]:
    """Fire what Dash fires when the page opens: callbacks without ``prevent_initial_call`` whose inputs are all
    in the layout. Returns (how many, response bytes)."""
    fired = size = 0
    for dep in deps:
        if dep.get("prevent_initial_call"):
            continue
        found = [(d, _find(layout, d["id"])) for d in dep["inputs"] + dep["state"]]
        if any(props is None for _, props in found[:len(dep["inputs"])]):
            continue
        vals = [{"id": d["id"], "property": d["property"], "value": (props or {}).get(d["property"])}
                for d, props in found]
        outs = _outputs(dep["output"])
        body = {"output": dep["output"], "outputs": outs if dep["output"].startswith("..") else outs[0],
                "inputs": vals[:len(dep["inputs"])], "state": vals[len(dep["inputs"]):], "changedPropIds": []}
        r = client.post("/_dash-update-component", json=body)
        assert r.status_code in (200, 204), (dep["output"], r.status_code, r.data[:300])
        fired, size = fired + 1, size + len(r.data)
    return fired, size


def visit(client) -> dict:
    """One first render through the test client: the page, its layout, the dependencies, the initial callbacks."""
    start = time.perf_counter()
    page = client.get("/")
    layout = client.get("/_dash-layout")
    deps = client.get("/_dash-dependencies")
    fired, cb_bytes = initial_callbacks(client, layout.get_json(), deps.get_json())
    return {"s": time.perf_counter() - start, "layout_b": len(layout.data), "callbacks": fired,
            "callback_b": cb_bytes, "page_b": len(page.data) + len(deps.data)}


def component_bytes(layout) -> dict[str, int]:
    """JSON bytes per component with an id, the largest (a component's bytes include its children's)."""
    out = {}

    def walk(c):
        cid = getattr(c, "id", None)
        if cid:
            out[cid] = len(json.dumps(c, cls=plotly.utils.PlotlyJSONEncoder))
        children = getattr(c, "children", None)
        for x in children if isinstance(children, list) else [children]:
            if x is not None and not isinstance(x, str | int | float):
                walk(x)

    walk(layout)
    return out


def server_side(store: Path, runs: int) -> dict:
    start = time.perf_counter()
    app, caches = A._build(store, REFRESH_S)
    built = time.perf_counter() - start
    client = app.server.test_client()
    t = time.perf_counter()
    first_layout = client.get("/_dash-layout")
    first = time.perf_counter() - t
    visits = []
    for _ in range(runs):
        time.sleep(REFRESH_S + 0.2)  # past the layout's refresh age: each visit lists the store, as after a pause
        visits.append(visit(client))
    t = time.perf_counter()
    layout = A.build_layout(caches, A.Memo())  # from scratch on the read store
    scratch = time.perf_counter() - t
    sizes = component_bytes(layout)
    return {"built": built, "first_layout": first, "first_layout_b": len(first_layout.data), "visits": visits,
            "scratch": scratch, "sizes": sorted(sizes.items(), key=lambda kv: -kv[1])[:12],
            "n_trials": len(caches[0].trials())}


# ---- browser ----------------------------------------------------------------------------------------
def serve(store: Path, port: int) -> tuple[subprocess.Popen, float]:
    """``hybridlt dashboard`` in its own process; returns it and the seconds until it served the first
    layout (which waits for its background warm-up, the first view)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "hybridlt.cli", "dashboard", str(store), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_dash-layout", timeout=120) as r:
                if r.status == 200:
                    return proc, time.perf_counter() - start
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"dashboard exited: {proc.stderr.read().decode()[-2000:]}") from None
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("dashboard did not start in 300 s")


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
            page.wait_for_function(RENDERED, arg=list(TABS[FIRST_TAB][1]), timeout=120_000, polling=50)
            wall = time.perf_counter() - start
            run = {"wall_s": wall, "browser_s": page.evaluate("() => performance.now()") / 1000,
                   "payload_kb": page.evaluate(PAYLOAD) / 1024, "tabs": {}}
            if i == 0 and screenshot:
                page.screenshot(path=str(screenshot), full_page=True)
            for tab, (_, graphs) in TABS.items():  # each other tab: its click to its charts drawn
                if tab != FIRST_TAB:
                    t = time.perf_counter()
                    page.click(f"#tab-{tab}")
                    page.wait_for_function(TAB_DRAWN, arg=list(graphs), timeout=120_000, polling=50)
                    run["tabs"][tab] = time.perf_counter() - t
            out.append(run)
            context.close()
        browser.close()
    return out


# ---- report -----------------------------------------------------------------------------------------
def _load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def report(args, size: tuple[int, float], gen_s: float | None, server: dict, browser: dict | None,
           load_before: str) -> str:
    n_files, mb = size
    visits = server["visits"]
    lines = [
        f"# Dashboard first render ({platform.machine()}, {os.cpu_count()} CPUs, "
        f"{args.trials:,} trials x {args.classes:,} classes x {args.epochs} epochs)", "",
        f"Store: {n_files:,} Parquet files, {mb:.0f} MiB"
        + (f", generated in {gen_s:.0f} s by `tests/dashboards/synthetic.py`" if gen_s else "")
        + f"; {server['n_trials']:,} trials read. Load average (1/5/15 min) at the start {load_before}, "
        f"at the end {_load()}.", "",
        "## Server side (Flask test client, in process)", "",
        "A visit: `/`, `/_dash-layout`, `/_dash-dependencies` and every callback Dash fires when the page opens "
        "(inputs from the layout), the server warm; each visit lists the store's folders for new files.", "",
        "| visit | first render (s) | layout (KiB) | initial callbacks | their bytes (KiB) | page + deps (KiB) |",
        "|---|---|---|---|---|---|",
        *[f"| {i + 1} | {v['s']:.3f} | {v['layout_b'] / 1024:.0f} | {v['callbacks']} | {v['callback_b'] / 1024:.0f} "
          f"| {v['page_b'] / 1024:.0f} |" for i, v in enumerate(visits)],
        "", f"median first render {statistics.median(v['s'] for v in visits):.3f} s (target: under 3 s).", "",
        "| step | s |", "|---|---|",
        f"| app built: the store read (`hybridlt dashboard` start) | {server['built']:.2f} |",
        f"| first layout after the start (waits for the warm-up that makes the first view) | "
        f"{server['first_layout']:.2f} |",
        f"| the first view made from scratch on the read store (a visit right after the store changed) | "
        f"{server['scratch']:.2f} |", "",
        "Largest components of the layout (JSON KiB):", "",
        "| component | KiB |", "|---|---|", *[f"| {k} | {v / 1024:.1f} |" for k, v in server["sizes"]], "",
    ]
    if browser:
        runs = browser["runs"]
        rest = [r["wall_s"] for r in runs[1:]] or [runs[0]["wall_s"]]
        lines += [
            "## Browser (headless Chromium, `hybridlt dashboard` in a subprocess)", "",
            f"First render: navigation to the open tab's charts drawn ({', '.join(TABS[FIRST_TAB][1])}), the "
            "trials table filled and the best config shown; each run in a fresh browser context; server start "
            "excluded. Then each other tab: its click to its charts drawn (s).", "",
            "| run | first render (s) | in-browser performance.now() (s) | Dash payload (KiB) | "
            + " | ".join(TABS[k][0] for k in TABS if k != FIRST_TAB) + " |",
            "|---|---|---|---|" + "---|" * (len(TABS) - 1),
            *[f"| {i + 1} | {r['wall_s']:.2f} | {r['browser_s']:.2f} | {r['payload_kb']:.0f} | "
              + " | ".join(f"{r['tabs'][k]:.2f}" for k in TABS if k != FIRST_TAB) + " |"
              for i, r in enumerate(runs)],
            "", f"first run {runs[0]['wall_s']:.2f} s; median of the others {statistics.median(rest):.2f} s "
                f"(target: under 3 s). Server start to its first layout served: {browser['up_s']:.1f} s.", "",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="store folder to reuse, or to create when missing (default: a temp dir)")
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--browser", action="store_true", help="also time the render in headless Chromium")
    parser.add_argument("--screenshot", help="with --browser: save the first view here (PNG)")
    parser.add_argument("--out", help="report file (default: bench/results/dashboard_render_cpu_<T>x<C>.md)")
    args = parser.parse_args()
    args.out = args.out or str(ROOT / "bench" / "results" / f"dashboard_render_cpu_{args.trials}x{args.classes}.md")
    load_before = _load()
    tmp = None
    store = Path(args.store) if args.store else Path(tmp := tempfile.mkdtemp(prefix="dash-bench-")) / "results"
    gen_s = None
    if not (store / "trials").is_dir():
        start = time.perf_counter()
        write_synthetic_store(store, args.trials, args.classes, args.epochs, workers=os.cpu_count() or 1)
        gen_s = time.perf_counter() - start
        print(f"generated {store} in {gen_s:.0f} s")
    try:
        server = server_side(store, args.runs)
        print({k: v for k, v in server.items() if k not in ("sizes",)})
        browser = None
        if args.browser:
            port = free_port()
            proc, up_s = serve(store, port)
            try:
                shot = Path(args.screenshot) if args.screenshot else None
                browser = {"up_s": up_s, "runs": render_times(f"http://127.0.0.1:{port}/", args.runs, shot)}
            finally:
                proc.terminate()
                proc.wait(10)
        text = report(args, store_files(store), gen_s, server, browser, load_before)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
