"""The dashboard in headless Chromium (Debian's ``chromium`` driven by Playwright) on a store from a
tiny sweep trained for real: select trials, switch the metric, check the charts change, screenshot."""

from __future__ import annotations

import json
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from dashstores import known_store, trained_store

from hybridlt.dashboards.app import FIRST_TAB, GRAPHS, TABS, create_app
from tests.dashboards.synthetic import write_synthetic_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if not os.environ.get("CI"):  # in CI it must run: .ci/run installs chromium
    if not CHROMIUM:
        pytest.skip("Debian's chromium is not installed (CI installs it: .ci/run)", allow_module_level=True)
    pytest.importorskip("playwright.sync_api")
from playwright.sync_api import sync_playwright  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
RENDERED = """ids => ids.every(id => {
  const g = document.querySelector('#' + id + ' .js-plotly-plot');
  return g && g._fullLayout && g.data && g.data.length > 0; })"""
SNAPSHOT = """ids => Object.fromEntries(ids.map(id => {
  const g = document.querySelector('#' + id + ' .js-plotly-plot');
  return [id, JSON.stringify({title: g.layout.title && g.layout.title.text, data: g.data.map(t => ({
    name: t.name, x: t.x, y: t.y, z: t.z, color: t.line && t.line.color,
    dims: t.dimensions && t.dimensions.map(d => d.values)}))})]; }))"""


def _serve(results):
    from werkzeug.serving import make_server

    srv = make_server("127.0.0.1", 0, create_app(results, refresh_s=1.0).server, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    return srv, thread


@contextmanager
def _page(url: str, width: int = 1400, height: int = 1000, **context):
    """A fresh Chromium page at ``url`` with every main chart drawn; yields (page, errors), where errors
    collects the page's uncaught JavaScript exceptions."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, **context)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            page.wait_for_function(RENDERED, arg=list(TABS[FIRST_TAB][1]), timeout=60_000)
            yield page, errors
        finally:
            browser.close()


@contextmanager
def _served(results):
    """The dashboard app on 127.0.0.1 (a free port) over ``results``; yields its URL."""
    srv, thread = _serve(results)
    try:
        yield f"http://127.0.0.1:{srv.server_port}/"
    finally:
        srv.shutdown()
        thread.join(5)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = trained_store(tmp_path_factory.mktemp("tiny"))
    srv, thread = _serve(store)
    yield f"http://127.0.0.1:{srv.server_port}/", store
    srv.shutdown()
    thread.join(5)


def _new_running_trial(store) -> None:
    """A trial that has reported one epoch and not finished: what a running sweep adds."""
    import pyarrow.dataset as ds

    from hybridlt.sweep.results import ResultsWriter

    last = ds.dataset(f"{store.path}/per_class").to_table().to_pandas().query("trial_id == '5eed0000' and epoch == 2")
    metrics = {"epoch": 1, "loss": 1.0, "con_loss": 1.0, "ce_loss": 1.0, "alpha": 1.0, "lr": 0.1, "acc": 0.5,
               "balanced_acc": 0.5, "many_acc": 0.6, "medium_acc": 0.5, "few_acc": 0.4,
               "per_class_acc": [0.5] * len(last)}
    ResultsWriter(store).epoch("feed0001", metrics, last.class_name.tolist(), last.train_count.tolist())


def _open_tab(page, tab: str) -> None:
    """Click a tab and wait for its charts to be drawn (a closed tab's charts are not in the page)."""
    page.click(f"#tab-{tab}")
    page.wait_for_function(RENDERED, arg=list(TABS[tab][1]), timeout=30_000)


def _snapshot(page) -> dict[str, str]:
    """Every main chart's title and traces, each tab opened in turn; the first tab is left open."""
    out = {}
    for tab, (_, graphs) in TABS.items():
        _open_tab(page, tab)
        out |= page.evaluate(SNAPSHOT, [g for g in graphs if g in GRAPHS])
    _open_tab(page, FIRST_TAB)
    assert set(out) == set(GRAPHS)
    return out


def _trace_x(page, graph: str) -> list:
    return page.evaluate(f"() => Array.from(document.querySelector('#{graph} .js-plotly-plot').data[0].x)")


def test_select_trials_switch_metric_charts_change(server, tmp_path):
    url, store = server
    with _page(url, accept_downloads=True) as (page, errors):
        page.wait_for_function("() => document.querySelector('#config-yaml').textContent.includes('-best')")
        # only the open tab's charts are in the page: the others are drawn when their tab opens
        assert page.evaluate("() => document.querySelectorAll('.js-plotly-plot').length") == 2  # groups, paired Δ
        first = _snapshot(page)
        # the best groups' trials are selected by default; the trial stopped early is listed, not selected
        assert len(_trace_x(page, "groups")) == 3
        assert "Traceback" not in page.content()

        # untick two trials: the per-trial charts follow, the rest stay
        boxes = page.locator("#trials input[type=checkbox]")
        boxes.nth(0).click()
        boxes.nth(1).click()
        page.wait_for_function("() => document.querySelector('#groups .js-plotly-plot').data[0].x.length === 1")
        _open_tab(page, "history")
        page.wait_for_function("() => document.querySelector('#curves .js-plotly-plot').data"
                               ".filter(t => t.name).length === 1")  # one group's curve (a legend needs two)
        picked = _snapshot(page)
        for graph in ("groups", "class-rank", "curves", "heatmap"):
            assert picked[graph] != first[graph], graph
        assert picked["parallel"] == first["parallel"]

        # switch the metric: what drives accuracy is now about few-shot accuracy
        page.click("#metric")
        page.get_by_role("option", name="few-shot accuracy").click()
        _open_tab(page, "drivers")
        page.wait_for_function("() => document.querySelector('#parallel .js-plotly-plot')"
                               ".layout.title.text.includes('few-shot')")
        page.wait_for_function("() => document.querySelector('#importance .js-plotly-plot')"
                               ".layout.title.text.includes('few_acc')")
        switched = _snapshot(page)
        for graph in ("parallel", "importance", "slices", "curves", "heatmap"):
            assert switched[graph] != picked[graph], graph
        # the head/medium/tail bars do not depend on the metric (only their order may: best group first)
        bars = [sorted(json.loads(snap["groups"])["data"][0]["x"]) for snap in (switched, picked)]
        assert bars[0] == bars[1]

        _open_tab(page, "drivers")
        page.get_by_label("interactive", exact=False).check()
        page.wait_for_function("() => document.querySelector('#parallel .js-plotly-plot').data[0].type"
                               " === 'parcoords'")

        # a running sweep writes a new trial's first epoch: it appears without a reload
        _new_running_trial(store)
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('1 running')",
                               timeout=15_000)
        page.locator("#trials").get_by_text("feed0001").wait_for(timeout=10_000)

        with page.expect_download() as download:
            page.click("#download-button")
        text = Path(download.value.path()).read_text()
        assert download.value.suggested_filename.endswith("-best.yaml") and "name: " in text and "-best" in text

        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 50_000 and not errors, errors
    record = os.environ.get("HYBRIDLT_SAVE_SCREENSHOT")  # e.g. bench/results/dashboard_screenshot.png
    if record:
        shutil.copyfile(shot, record)


def test_ablation_seeds_paired_view_note_after_reload_and_two_stores(tmp_path):
    """An ablation store (3 variants x 3 seeds) beside a second store: bars per variant, the paired table,
    a note that survives a reload, and both stores side by side."""
    abl = write_synthetic_store(tmp_path / "abl", n_classes=12, n_epochs=3, ablation=(["base", "psc", "mpsc"], 3),
                                stopped=0.0)
    other = known_store(tmp_path / "other")
    with _served([abl.path, other.path]) as url, _page(url, 1280, 720) as (page, errors):
        # seeds grouped: one bar per variant, with 95% CI error bars over its 3 seeds
        groups = page.evaluate("() => document.querySelector('#groups .js-plotly-plot').data[0]")
        assert sorted(groups["x"]) == ["base", "mpsc", "psc"] and len(groups["error_y"]["array"]) == 3
        # the paired view: Δ, its CI and p of psc and mpsc against base, per metric
        page.locator("#paired-table").get_by_text("base (reference)").first.wait_for(timeout=10_000)
        cells = page.evaluate("() => Array.from(document.querySelectorAll('#paired-table td')).map(c => "
                              "c.textContent)")
        assert cells.count("base (reference)") == 5 and cells.count("psc") == 5 and cells.count("mpsc") == 5
        # both stores side by side
        for k in (0, 1):
            page.wait_for_function(f"() => document.querySelector('#store-{k}-groups .js-plotly-plot')"
                                   ".data.length === 4")
        # a note, saved, then the page reloaded: it is still there (it lives in the store)
        page.fill("#note-text", "seed 2 looked odd")
        page.fill("#note-tags", "check, tail")
        page.click("#note-save")
        page.wait_for_function("() => document.querySelector('#note-status').textContent.includes('saved')")
        page.reload()
        page.wait_for_function(RENDERED, arg=list(TABS[FIRST_TAB][1]), timeout=60_000)
        assert page.input_value("#note-text") == "seed 2 looked odd"
        page.locator("#trials").get_by_text("#check #tail seed 2 looked odd").wait_for(timeout=10_000)
        shot = tmp_path / "ablation.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 50_000 and not errors, errors


def test_paged_table_keeps_ticks_across_pages_filters_and_sorts_on_the_server(tmp_path):
    """40 trials: 4 pages of 12 cut by the server; a tick on page 2 survives going back to page 1; a filter and
    a sort are applied to every trial, not to the page shown."""
    store = write_synthetic_store(tmp_path / "many", n_trials=40, n_classes=6, n_epochs=2)
    note = "() => document.querySelector('#table-note').parentElement.textContent"
    checked = "() => Array.from(document.querySelectorAll('#trials input[type=checkbox]')).map(b => b.checked)"
    first_id = "() => document.querySelector('#trials td[data-dash-column=trial_id]').textContent"
    with _served(store.path) as url, _page(url) as (page, errors):
        assert "40 trials, 12 a page" in page.evaluate(note) and "5 selected" in page.evaluate(note)
        assert len(page.locator("#trials td[data-dash-column=trial_id]").all()) == 12
        assert page.evaluate(checked) == [True] * 5 + [False] * 7  # the best 5, best first
        top = page.evaluate(first_id)
        page.click("#trials button.next-page")
        page.wait_for_function(f"() => ({first_id})() !== '{top}'")
        assert page.evaluate(checked) == [False] * 12
        page.locator("#trials input[type=checkbox]").first.click()
        page.wait_for_function(f"() => ({note})().includes('6 selected')")
        page.wait_for_function("() => document.querySelector('#groups .js-plotly-plot').data[0].x.length === 6")
        page.click("#trials button.previous-page")
        page.wait_for_function(f"() => ({first_id})() === '{top}'")
        page.wait_for_timeout(500)  # any late clearing of ticks would show here
        assert page.evaluate(checked) == [True] * 5 + [False] * 7 and "6 selected" in page.evaluate(note)

        cell = page.locator("#trials th.dash-filter[data-dash-column=final_acc] input[type=text]").first
        cell.fill("< 50")
        cell.press("Enter")
        page.wait_for_function(f"() => ({note})().includes(' of 40 trials')")
        shown = page.evaluate("() => Array.from(document.querySelectorAll("
                              "'#trials td[data-dash-column=final_acc]')).map(c => parseFloat(c.textContent))")
        assert shown and all(v < 50 for v in shown)
        page.locator("#trials th[data-dash-column=final_acc] .column-header--sort").first.click()
        page.wait_for_timeout(300)
        page.wait_for_function("() => { const v = Array.from(document.querySelectorAll("
                               "'#trials td[data-dash-column=final_acc]')).map(c => parseFloat(c.textContent));"
                               " return v.every((x, i) => i === 0 || v[i - 1] <= x); }")
        text = page.locator('#trials th.dash-filter[data-dash-column="param.loss.contrastive"] '
                            'input[type=text]').first
        text.fill("PSC")  # a text column: contains, any case (mpsc and psc)
        text.press("Enter")
        page.wait_for_function("() => Array.from(document.querySelectorAll("
                               "'#trials td[data-dash-column=\"param.loss.contrastive\"]'))"
                               ".every(c => c.textContent.includes('psc'))")
        assert "6 selected" in page.evaluate(note) and not errors, errors
