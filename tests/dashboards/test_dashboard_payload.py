"""What makes the first render fast at any size (timing itself is bench/dashboard_render.py's): the page opens
with one layout request and no callback, the table holds one page, and the layout's bytes do not grow with the
number of trials. The per-trial charts' limits are scaled down 20x here so that a 10x bigger store stays cheap
to write: 100 and 1,000 trials stand for 2,000 and 20,000."""

from __future__ import annotations

import json

import pytest

from hybridlt.dashboards import app as A
from hybridlt.dashboards import dense
from hybridlt.dashboards import queries as q
from hybridlt.dashboards import table as tb
from tests.dashboards.synthetic import write_synthetic_store

SIZES = (100, 1000)
SCALE = 20


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("payload")
    return {n: write_synthetic_store(root / f"s{n}", n_trials=n, n_classes=20, n_epochs=1, workers=2).path
            for n in SIZES}


@pytest.fixture
def scaled(monkeypatch):
    for module, name in ((dense, "POINTS_MAX"), (dense, "LINES_MAX"), (dense, "BEST_MARKS"), (dense, "OTHER_MARKS"),
                         (q, "IMPORTANCE_MAX_TRIALS"), (q, "FANOVA_MAX_TRIALS"), (A, "HEATMAP_ROWS")):
        monkeypatch.setattr(module, name, getattr(module, name) // SCALE)


def _first_render(store) -> tuple[dict, list[dict], int]:
    app, _ = A._build(store, 5.0)
    client = app.server.test_client()
    layout = client.get("/_dash-layout")
    return layout.get_json(), client.get("/_dash-dependencies").get_json(), len(layout.data)


def _props(node, cid):
    if isinstance(node, dict):
        props = node.get("props", {})
        return props if props.get("id") == cid else _props(props.get("children"), cid)
    for child in node if isinstance(node, list) else []:
        hit = _props(child, cid)
        if hit is not None:
            return hit
    return None


def _marks(figure: dict) -> int:
    """Points a chart sends, counted over its traces' x values (typed arrays as their byte length / 4)."""
    n = 0
    for trace in figure["data"]:
        x = trace.get("x")
        n += (len(x["bdata"]) * 3 // 4 // 4) if isinstance(x, dict) else len(x or [])
    return n


def test_the_first_render_is_one_page_of_rows_and_bounded_charts(stores, scaled):
    sizes, marks = {}, {}
    for n, store in stores.items():
        layout, deps, sizes[n] = _first_render(store)
        assert all(d.get("prevent_initial_call") for d in deps)  # no callback fires when the page opens
        table = _props(layout, "trials")
        assert len(table["data"]) == tb.PAGE_SIZE and table["page_action"] == "custom"
        assert table["page_count"] == -(-n // tb.PAGE_SIZE)
        assert len(_props(layout, "selection")["data"]) <= 40
        marks[n] = {g: _marks(_props(layout, g)["figure"]) for g in ("slices", "history", "parallel", "heatmap")}
        assert "trials drawn" in json.dumps(_props(layout, "parallel")["figure"]["layout"]["title"])
    big, small = SIZES[1], SIZES[0]
    assert sizes[big] < 1.25 * sizes[small], sizes  # ten times the trials, about the same bytes
    for graph, count in marks[big].items():
        assert count < 1.5 * marks[small][graph] + 50, (graph, marks)
