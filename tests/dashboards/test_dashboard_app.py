"""The Dash app: its layout, the callbacks' outputs for given selections, refresh, and bad stores."""

from __future__ import annotations

import json

import plotly.graph_objects as go
import pytest
from dashstores import known_store, write_known_trial

from hybridlt.cli import main
from hybridlt.dashboards import app as A
from hybridlt.dashboards import queries as q
from hybridlt.sweep.results import StoreError
from tests.dashboards.synthetic import write_synthetic_store


def find(component, component_id):
    """The component with this id anywhere under ``component``."""
    if getattr(component, "id", None) == component_id:
        return component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list) else [children]:
        if child is not None and not isinstance(child, str | int | float):
            hit = find(child, component_id)
            if hit is not None:
                return hit
    return None


@pytest.fixture
def built(tmp_path):
    known_store(tmp_path / "results")
    return A._build(tmp_path / "results", 5.0)


def test_layout_renders_with_the_table_filled_and_the_best_selected(built):
    app, cache = built
    layout = app.layout()
    for graph in (*A.GRAPHS, "variants", "pareto", "config-yaml", "download"):
        assert find(layout, graph) is not None, graph
    table = find(layout, "trials")
    assert [r["trial_id"] for r in table.data] == ["t2", "t1", "t3"] and table.selected_row_ids == ["t2", "t1", "t3"]
    assert {"trial_id", "param.loss.temperature", "final_acc"} <= {c["id"] for c in table.columns}
    assert "config_yaml" not in table.data[0]  # only what the table shows reaches the browser
    assert find(layout, "banner").style == {"display": "none"} and "3 trials" in find(layout, "status").children
    assert find(layout, "metric").value == "acc"
    json.dumps(app.layout(), cls=__import__("plotly").utils.PlotlyJSONEncoder)  # serialisable as Dash sends it


def test_callbacks_return_figures_for_a_selection(built):
    _, cache = built
    heat, rank = A.per_class_figures(cache, ["t1"], "acc")
    assert list(heat.data[1].y) == ["t2", "▶ t1", "t3"] and [t.name for t in rank.data] == ["t1"]
    groups, variants, style = A.group_figures(cache, ["t1", "t2"])
    assert list(groups.data[0].x) == ["t1", "t2"] and style["display"] == "none"
    slices, pareto, pstyle = A.driver_figures(cache, "acc")
    assert len(slices.data) == 2 and pstyle["display"] == "none"
    assert len(A.parallel_figure(cache, "acc", "interactive").data[0].dimensions) == 3
    lines = A.parallel_figure(cache, "acc").data[:-2]
    assert [t.text[0] for t in lines] == ["t3", "t1", "t2"]  # the best drawn last, on top
    memo = A.Memo()
    imp = A.importance_figure(cache, memo, "acc")
    assert {*imp.data[0].y} == {"loss.temperature", "loss.contrastive"}
    curves = A.fg.curves_figure(cache.epochs(["t1", "t3"]), "acc", A.fg.trial_colors(["t1", "t3"]))
    assert len(curves.data) == 8
    options, value = A.config_choices(cache, ["t1", "t3"], "acc")
    assert [o["value"] for o in options] == ["t1", "t3"] and value == "t1"
    assert A.config_choices(cache, [], "few_acc")[1] == "t2"
    assert "name: known-best" in A.config_yaml(cache, "t1", "acc") and "no trial" in A.config_yaml(cache, None, "acc")
    assert A.config_yaml(cache, "nope", "acc") == f"trial nope: no such trial in {cache.root}"


def test_switching_the_metric_changes_the_charts(built):
    _, cache = built
    by_acc, by_few = A.parallel_figure(cache, "acc", "interactive"), A.parallel_figure(cache, "few_acc", "interactive")
    assert list(by_acc.data[0].line.color) != list(by_few.data[0].line.color)
    assert A.parallel_figure(cache, "acc").to_json() != A.parallel_figure(cache, "few_acc").to_json()
    assert "few-shot" in A.per_class_figures(cache, [], "few_acc")[0].layout.title.text
    assert A.importance_figure(cache, A.Memo(), "few_acc").layout.title.text.startswith(
        "Parameter importance for final few_acc")


def test_refresh_brings_new_trials_and_keeps_the_selection(built):
    _, cache = built
    unchanged = A.refresh_outputs(cache, cache.version, ["t1"], "acc")
    assert unchanged[0] is A.no_update and "3 trials" in unchanged[5]
    write_known_trial(cache.root, "t9", {"loss.temperature": 0.3, "loss.contrastive": "psc"}, [[1.0] * 4, [1.0] * 4])
    version, rows, columns, selected, selected_ids, status, *_ = A.refresh_outputs(cache, 1, ["t1"], "acc")
    assert version == 2 and rows[0]["trial_id"] == "t9" and "4 trials" in status
    assert selected_ids == ["t1"] and rows[selected[0]]["trial_id"] == "t1"


def test_an_empty_store_shows_a_message_not_a_traceback(tmp_path):
    (tmp_path / "results" / "trials").mkdir(parents=True)
    app, cache = A._build(tmp_path / "results", 5.0)
    layout = app.layout()
    assert "holds no trials yet" in find(layout, "banner").children
    assert find(layout, "trials").data == []
    for fig in (*A.per_class_figures(cache, [], "acc"), A.driver_figures(cache, "acc")[0],
                A.parallel_figure(cache, "acc"), A.importance_figure(cache, A.Memo(), "acc")):
        assert isinstance(fig, go.Figure) and len(fig.data) == 0
    assert A.config_yaml(cache, None, "acc") == "no trial yet"
    known_store(tmp_path / "results")
    assert A.refresh_outputs(cache, 0, [], "acc")[1][0]["trial_id"] == "t2"  # the store fills in


def test_a_path_that_does_not_exist_is_an_error(tmp_path, capsys):
    with pytest.raises(StoreError, match="does not exist"):
        A.create_app(tmp_path / "nope")
    assert main(["dashboard", str(tmp_path / "nope"), "--port", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: RESULTS:") and "does not exist" in err[0]


def test_flask_serves_the_page_and_the_layout(built):
    app, _ = built
    client = app.server.test_client()
    assert client.get("/").status_code == 200
    layout = client.get("/_dash-layout")
    assert layout.status_code == 200 and b'"trials"' in layout.data and b"config_yaml" not in layout.data


def test_ablation_and_multi_objective_stores(tmp_path):
    write_synthetic_store(tmp_path / "abl", n_classes=6, n_epochs=2, ablation=(["full", "no_curriculum"], 3))
    cache = q.ResultsCache(tmp_path / "abl")
    cache.refresh()
    _, variants, style = A.group_figures(cache, [])
    assert style.get("display") != "none" and list(variants.data[0].x) == ["full", "no_curriculum"]
    assert all(len(t.error_y.array) == 2 for t in variants.data)
    write_synthetic_store(tmp_path / "mo", n_trials=12, n_classes=6, n_epochs=2, objectives=("acc", "few_acc"))
    cache = q.ResultsCache(tmp_path / "mo")
    cache.refresh()
    _, pareto, style = A.driver_figures(cache, "acc")
    assert style.get("display") != "none" and cache.pareto_ids()
    assert set(pareto.data[1].text) == cache.pareto_ids()
