"""The Dash app: its layout, the callbacks' outputs for given selections, refresh, and bad stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from dashstores import ROOT, known_store, write_known_trial

from hybridlt.cli import main
from hybridlt.dashboards import app as A
from hybridlt.dashboards import queries as q
from hybridlt.sweep.paired import ablation_report
from hybridlt.sweep.results import StoreError, write_note
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
def built(tmp_path):  # the app and its one cache
    known_store(tmp_path / "results")
    return A._build(tmp_path / "results", 5.0)


T1, T2 = "t1", "t2"  # the known store's trials have no seed: each its own group, named by its trial id


def test_layout_renders_with_the_table_filled_and_the_best_groups_selected(built):
    app, caches = built
    layout = app.layout()
    for graph in (*A.GRAPHS, *A.DIAGNOSTIC_GRAPHS, "pareto", "paired-table", "config-yaml", "download", "note-save"):
        assert find(layout, graph) is not None, graph
    table = find(layout, "trials")
    assert [r["trial_id"] for r in table.data] == ["t2", "t1", "t3"]
    assert table.selected_row_ids == ["t2", "t1"]  # t3 stopped early: shown, not selected by default
    assert find(layout, "selection").data == ["t2", "t1"] and table.page_action == "custom"
    assert "3 trials" in find(layout, "table-note").children and "2 selected" in find(layout, "selected-note").children
    assert table.data[0]["final_acc"] == pytest.approx(65.0)  # percent: (0.4 + 0.6 + 1.0 + 0.6) / 4
    assert {"trial_id", "param.loss.temperature", "final_acc", "notes"} <= {c["id"] for c in table.columns}
    assert [c["id"] for c in table.columns][3:6] == ["final_acc", "final_many_acc", "final_medium_acc"]
    assert "config_yaml" not in table.data[0]  # only what the table shows reaches the browser
    status = find(layout, "status").children
    assert "3 trials" in status and "1 stopped early" in status and find(layout, "banner").style == {"display": "none"}
    assert find(layout, "metric").value == "acc" and find(layout, "budget").value == "final"
    json.dumps(app.layout(), cls=__import__("plotly").utils.PlotlyJSONEncoder)  # serialisable as Dash sends it


def test_callbacks_return_figures_for_a_selection(built):
    _, (cache,) = built
    memo = A.Memo()
    bars, heat, rank, curves, losses = A.selection_figures(cache, memo, ["t1"], "acc", "final")
    assert list(bars.data[0].x) == [T1] and bars.data[3].name == "overall"
    assert list(bars.data[3].y) == pytest.approx([45.0])  # (0.1 + 0.5 + 0.9 + 0.3) / 4, in %
    assert list(heat.data[1].y) == [T2, "▶ " + T1] and [t.name for t in rank.data] == [T1]
    assert [t.name for t in curves.data] == [T1] and len(losses.data) == 4
    importance, slices, pareto, pstyle, hist = A.driver_figures(cache, memo, "acc", "final")
    marked = [t for t in slices.data if t.marker.symbol == "x"]
    assert marked and set(marked[0].text) == {"t3"} and "stopped early" in slices.layout.title.text
    assert pstyle["display"] == "none" and "budget" in importance.layout.title.text
    assert {*importance.data[0].y} == {"loss.temperature", "loss.contrastive"}
    assert [t.name for t in hist.data][-1] == "best so far (completed)"
    lines = A.parallel_figure(cache, memo, "acc", "final").data[:-2]
    assert sorted(t.text[0] for t in lines) == ["t1", "t2"]  # stopped t3 is not scored under the final rule
    out = A.choices(cache, memo, ["t1", "t3"], "acc", "final")
    assert [o["value"] for o in out[("config-trial", "options")]] == ["t1", "t3"]
    assert out[("config-trial", "value")] == "t1" and out[("diff-b", "value")] == "t3"
    assert "name: known-best" in A.config_yaml(cache, memo, "t1", "acc")
    assert A.config_yaml(cache, memo, None, "acc") == "no trial yet"
    assert A.config_yaml(cache, memo, "nope", "acc") == f"trial nope: no such trial in {cache.root}"
    diff = A.diff_text(cache, "t1", "t2")
    assert "loss.temperature  0.1  |  0.5" in diff and "loss.contrastive  sc  |  psc" in diff


def test_common_epoch_budget_scores_every_trial_at_epoch_one(built):
    _, (cache,) = built
    memo = A.Memo()
    view = A.view_of(cache, memo, "acc", "common")
    assert view.budget.epoch == 1 and view.budget.frame["scored"].all()
    par = A.parallel_figure(cache, memo, "acc", "common", "interactive")
    # epoch-1 accuracies in %: t3 (0 + .1 + .2 + 0) / 4, t1 (0 + .2 + .4 + .1) / 4, t2 (.2 + .4 + .6 + .4) / 4
    assert list(par.data[0].line.color) == pytest.approx([7.5, 17.5, 40.0])
    assert "epoch 1" in par.layout.title.text


def test_switching_the_metric_reorders_the_table_and_changes_the_charts(built):
    _, (cache,) = built
    memo = A.Memo()
    by_acc = A.parallel_figure(cache, memo, "acc", "final", "interactive")
    by_few = A.parallel_figure(cache, memo, "few_acc", "final", "interactive")
    assert list(by_acc.data[0].line.color) != list(by_few.data[0].line.color)
    assert "few-shot" in A.selection_figures(cache, memo, [], "few_acc", "final")[1].layout.title.text
    out = A.table_page(cache, memo, "few_acc", "final", 0, [], "", ["t1"])
    few = [r["final_few_acc"] for r in out["data"]]
    assert few == sorted(few, reverse=True) and out["selected_row_ids"] == ["t1"]
    assert [out["data"][i]["id"] for i in out["selected_rows"]] == ["t1"]


def test_refresh_brings_new_trials_and_keeps_the_selection(built):
    _, (cache,) = built
    memo = A.Memo()
    unchanged = A.refresh_outputs(cache, memo, cache.version, ["t1"], "acc", "final")
    assert unchanged[0] is A.no_update and "3 trials" in unchanged[3]
    write_known_trial(cache.root, "t9", {"loss.temperature": 0.3, "loss.contrastive": "psc"}, [[1.0] * 4, [1.0] * 4])
    version, columns, selection, status, *_ = A.refresh_outputs(cache, memo, 1, ["t1"], "acc", "final")
    assert version == 2 and "4 trials" in status and selection == ["t1"]
    page = A.table_page(cache, memo, "acc", "final", 0, [], "", selection)
    assert page["data"][0]["trial_id"] == "t9" and page["data"][page["selected_rows"][0]]["trial_id"] == "t1"


def test_a_note_is_saved_in_the_store_and_shown_in_the_table(built):
    _, (cache,) = built
    write_note(cache.root, "t1", " warm-up too short ", ["tail", " check", ""])
    assert json.loads((Path(cache.root.path) / "notes" / "t1.json").read_text())["tags"] == ["check", "tail"]
    assert cache.notes() == {"t1": {"note": "warm-up too short", "tags": ["check", "tail"]}}
    view = A.view_of(cache, A.Memo(), "acc", "final")
    rows = {r["trial_id"]: r for r in A.table_rows(view, A.table_columns(view), cache.notes())}
    assert rows["t1"]["notes"] == "#check #tail warm-up too short" and rows["t2"]["notes"] is None
    with pytest.raises(StoreError, match="trial_id"):
        write_note(cache.root, "../t1", "x", [])
    assert not list((Path(cache.root.path) / "notes").glob(".*"))  # no temp file left behind


def test_integer_parameters_show_as_whole_numbers_floats_with_three_digits():
    from types import SimpleNamespace

    trials = pd.DataFrame({"trial_id": ["a", "b"], "status": ["completed"] * 2, "epochs_done": [3, 3],
                           "param.sampler.positives": pd.array([2, None], dtype="Int64"),
                           "param.loss.temperature": [0.1234, 0.5], "param.seed": [0, 1]})
    view = SimpleNamespace(trials=trials, members={"a": ["a"], "b": ["b"]},
                           params=["param.sampler.positives", "param.loss.temperature", "param.seed"])
    fmt = {c["id"]: c["format"].to_plotly_json() for c in A.table_columns(view) if "format" in c}
    assert fmt["param.sampler.positives"]["specifier"] == ".0f" == fmt["param.seed"]["specifier"]
    assert fmt["param.loss.temperature"]["specifier"] == ".3g"


def test_diagnostics_of_an_old_store_say_so_and_of_a_new_one_show(built, tmp_path):
    _, (cache,) = built
    opts, epoch, confusion, norms, posthoc = A.diagnostic_outputs(cache, "t1", None, True)
    assert [o["value"] for o in opts] == [1, 2] and epoch == 2
    for fig in (confusion, norms, posthoc):  # the known store has no diagnostics: null columns, a message
        assert len(fig.data) == 0 and "before the diagnostics" in fig.layout.annotations[0].text
    write_synthetic_store(tmp_path / "new", n_trials=3, n_classes=8, n_epochs=2)
    new = q.ResultsCache(tmp_path / "new")
    new.refresh()
    tid = new.trials()["trial_id"].iloc[0]
    _, _, confusion, norms, posthoc = A.diagnostic_outputs(new, tid, 1, False)
    row = new.epochs([tid]).iloc[0]
    assert np.asarray(confusion.data[0].z, dtype=float)[2, 0] == pytest.approx(100 * row["confusion_few_to_many"])
    assert len(norms.data[0].x) == 8 and posthoc.data[1].y[0] == pytest.approx(100 * row["la_acc"])


def test_an_empty_store_shows_a_message_not_a_traceback(tmp_path):
    (tmp_path / "results" / "trials").mkdir(parents=True)
    app, (cache,) = A._build(tmp_path / "results", 5.0)
    layout = app.layout()
    assert "holds no trials yet" in find(layout, "banner").children
    assert find(layout, "trials").data == []
    memo = A.Memo()
    for fig in (*A.selection_figures(cache, memo, [], "acc", "final")[:4], A.driver_figures(cache, memo, "acc",
                                                                                            "final")[1],
                A.parallel_figure(cache, memo, "acc", "final"), A.driver_figures(cache, memo, "acc", "final")[0]):
        assert isinstance(fig, go.Figure) and len(fig.data) == 0
    known_store(tmp_path / "results")
    selection = A.refresh_outputs(cache, memo, 0, [], "acc", "final")[2]  # the store fills in
    assert selection == ["t2", "t1"] and A.table_page(cache, memo, "acc", "final", 0, [], "", selection)["data"][0][
        "trial_id"] == "t2"


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


def test_ablation_store_groups_seeds_and_pairs_them_as_ablate_does(tmp_path):
    write_synthetic_store(tmp_path / "abl", n_classes=6, n_epochs=2, ablation=(["full", "no_curriculum"], 3),
                          stopped=0.0)
    cache = q.ResultsCache(tmp_path / "abl")
    cache.refresh()
    memo = A.Memo()
    view = A.view_of(cache, memo, "acc", "final")
    assert sorted(view.members) == ["full", "no_curriculum"] and all(len(m) == 3 for m in view.members.values())
    assert "param.seed" not in A.gr.hyperparams(view.params)
    assert sorted(A.default_selection(view)) == sorted(view.trials["trial_id"])  # every seed of every group
    note, rows, delta = A.paired_outputs(cache, memo, A.default_selection(view), "acc", "final", "full")
    report = ablation_report(view.trials.to_dict("records"), ["full", "no_curriculum"], "full")
    want = {(r["variant"], r["metric"]): r for r in report}
    for row in rows:
        r = want[(row["group"].removesuffix(" (reference)"), row["metric"])]
        assert row["mean %"] == f"{r['mean']:.1f}" and row["seeds"] == r["n"] == 3
        if r["variant"] == "no_curriculum":
            assert row["Δ pp"] == f"{r['diff_vs_ref']:.1f}" and row["p (paired t)"] == f"{r['p_paired']:.3f}"
    assert list(delta.data[1].y) == ["no_curriculum"] and np.asarray(delta.data[1].z).shape == (1, 6)
    assert "seed" not in {*A.driver_figures(cache, memo, "acc", "final")[0].data[0].y}  # importance


def test_two_stores_side_by_side(tmp_path):
    known_store(tmp_path / "a")
    write_synthetic_store(tmp_path / "b", n_classes=6, n_epochs=2, ablation=(["full", "solo"], 2))
    app, caches = A._build([tmp_path / "a", tmp_path / "b"], 5.0)
    layout = app.layout()
    stores = find(layout, "stores")
    assert "side by side" in stores.children[0].children
    bars = [find(layout, f"store-{k}-groups").figure for k in (0, 1)]
    assert list(bars[0].data[0].x) == ["t2", "t1"]  # each store its own groups (t3 stopped early: not scored)
    assert sorted(bars[1].data[0].x) == ["full", "solo"] and len(bars[1].data) == 4
    history = [find(layout, f"store-{k}-history").figure for k in (0, 1)]
    assert sorted(history[0].data[0].text) == ["t1", "t2"] and len(history[1].data[0].text) >= 2
    assert find(layout, "trials").data[0]["trial_id"] == "t2"  # the detailed view is of the first store


def test_the_dashboard_does_not_import_torch():
    code = "import hybridlt.dashboards.app, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_multi_objective_store_shows_the_pareto_front(tmp_path):
    write_synthetic_store(tmp_path / "mo", n_trials=12, n_classes=6, n_epochs=2, objectives=("acc", "few_acc"))
    cache = q.ResultsCache(tmp_path / "mo")
    cache.refresh()
    _, _, pareto, style, _ = A.driver_figures(cache, A.Memo(), "acc", "final")
    completed = set(cache.trials().query("status == 'completed'")["trial_id"])
    assert style.get("display") != "none" and cache.pareto_ids()
    assert set(pareto.data[1].text) == cache.pareto_ids() & completed
