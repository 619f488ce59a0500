"""Figure functions: frames in, plotly figures out, checked trace by trace."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from hybridlt.dashboards import dense
from hybridlt.dashboards import figures as fg
from hybridlt.dashboards import groups as gr
from hybridlt.dashboards import queries as q


@pytest.fixture
def matrix():
    return q.ClassMatrix(["t2", "t1"], np.array([[1.0, 0.5], [0.25, 0.0]]), np.array([0, 1]), np.array([0, 1]),
                         np.array([100.0, 10.0]), ["c", "a"], 2)


@pytest.fixture
def trials():
    return pd.DataFrame({
        "trial_id": ["t1", "t2", "t3", "t4"], "status": ["completed"] * 3 + ["stopped"],
        "param.loss.contrastive": ["sc", "psc", None, "sc"], "param.loss.temperature": [0.01, 0.1, 1.0, 0.5],
        "param.loss.prototypes_per_class": pd.array([None, 2, 3, None], dtype="Int64"),
        "final_acc": [0.5, 0.7, 0.6, 0.2], "final_few_acc": [0.1, 0.3, 0.4, 0.0],
    })


def test_heatmap_shows_the_matrix_under_the_count_profile(matrix):
    fig = fg.class_heatmap_figure(matrix, ["t1"], "acc", total_trials=5)
    bars, heat = fig.data
    assert isinstance(bars, go.Bar) and list(bars.y) == [100.0, 10.0]
    assert isinstance(heat, go.Heatmap) and list(heat.y) == ["t2", "▶ t1"]
    np.testing.assert_allclose(np.asarray(heat.z, dtype=float), 100 * matrix.acc)
    assert "2 of 5 groups" in fig.layout.title.text and fig.layout.yaxis.type == "log"


def test_heatmap_of_binned_classes_says_so(matrix):
    matrix.names = None
    fig = fg.class_heatmap_figure(matrix, [], "few_acc", total_trials=2)
    assert "rank bins" in fig.layout.xaxis2.title.text and "few-shot" in fig.layout.title.text


def test_class_rank_lines_per_trial_with_group_marks():
    curves = pd.DataFrame({"trial_id": ["a", "a", "b", "b"], "rank_lo": [0, 1, 0, 1], "rank_hi": [0, 1, 0, 1],
                           "rank": [0.0, 1.0, 0.0, 1.0], "accuracy": [0.9, 0.1, 0.8, 0.3],
                           "train_count": [100, 5, 100, 5]})
    fig = fg.class_rank_figure(curves, {"a": "red", "b": "blue"}, [(0.5, "few →")], binned=False)
    assert [t.name for t in fig.data] == ["a", "b"] and list(fig.data[1].y) == pytest.approx([80, 30])  # percent
    assert fig.data[0].line.color == "red" and fig.layout.shapes[0].x0 == 0.5


def test_parallel_coordinates_encode_categories_logs_and_missing(trials):
    params = q.param_columns(trials)
    fig = fg.parallel_figure(trials, params, "acc", interactive=True)
    dims = fig.data[0].dimensions
    assert [d.label for d in dims] == ["loss.contrastive", "loss.temperature (log)", "loss.prototypes_per_class",
                                       "acc %"]
    # rows by the objective, worst first, so the best lines are drawn last (on top)
    assert list(dims[0].ticktext) == ["n/a", "psc", "sc"] and list(dims[0].values) == [1, 1, -1, 0]
    np.testing.assert_allclose(dims[1].values, np.log10([0.5, 0.01, 1.0, 0.1]))
    assert dims[2].ticktext[0] == "n/a" and dims[2].values[0] < 2  # missing below the observed range
    assert list(fig.data[0].line.color) == [0.2, 0.5, 0.6, 0.7]
    other = fg.parallel_figure(trials, params, "few_acc", interactive=True)
    assert list(other.data[0].line.color) == [0.0, 0.1, 0.3, 0.4]


def test_static_parallel_lines_one_polyline_per_trial(trials):
    fig = fg.parallel_figure(trials, q.param_columns(trials), "acc")
    lines, ticks = fig.data[:-2], fig.data[-1]
    ys = np.concatenate([np.asarray(t.y, dtype=float) for t in lines])
    assert np.isnan(ys).sum() == 4 and len(ys) == 4 * 5  # 4 axes + a break per trial
    assert np.nanmin(ys) >= 0 and np.nanmax(ys) <= 1
    # the objective (last axis) of each line, by the trial named at its vertices
    last = {t.text[i]: float(t.y[i]) for t in lines for i in range(3, len(t.y), 5)}
    assert last == pytest.approx({"t4": 0.0, "t1": 0.6, "t3": 0.8, "t2": 1.0})
    assert len(fig.layout.shapes) == 4 and "<b>acc %</b>" in {a.text for a in fig.layout.annotations}
    assert {"n/a", "psc", "sc"} <= set(ticks.text)


def test_group_bars_draw_a_ci_only_where_two_or_more_seeds_give_one():
    from hybridlt.sweep.paired import ablation_report

    trials = [{"trial_id": f"{v}{s}", "status": "completed", "param.variant": v, "param.seed": s,
               **{f"final_{m}": a + 0.01 * s for m in ("many_acc", "medium_acc", "few_acc", "acc")}}
              for v, a, seeds in (("one", 0.5, [0]), ("three", 0.7, [0, 1, 2])) for s in seeds]
    report = pd.DataFrame(ablation_report(trials, ["one", "three"], "one",
                                          ["many_acc", "medium_acc", "few_acc", "acc"]))
    fig = fg.group_stats_figure(report, "")
    for trace in fig.data:
        one, three = trace.error_y.array
        assert one == 0 and trace.error_y.width == 0  # one seed: no interval drawn (no caps on a 0-length bar)
        # three seeds 70, 71, 72 %: mean 71, sd 1, half-width t(0.975, 2) / sqrt(3) = 4.303 / 1.732
        assert three == pytest.approx(4.3027 / 3 ** 0.5, rel=1e-3)
        assert trace.customdata[0] == "(1 seed, no CI)" and trace.customdata[1].startswith("± 2.5 (95% CI, 3 seeds")


def test_importance_bars_largest_on_top_and_left_out_named():
    fig = fg.importance_figure({"param.a": 0.7, "param.b": 0.3}, "fANOVA", "acc", ["param.c"])
    assert list(fig.data[0].y) == ["b", "a"] and list(fig.data[0].x) == [0.3, 0.7]
    assert "fANOVA" in fig.layout.title.text and "c" in fig.layout.annotations[0].text


def test_slices_one_panel_per_parameter(trials):
    fig = fg.slice_figure(trials, q.param_columns(trials), "acc")
    assert len(fig.data) == 3 and list(fig.data[0].x) == ["sc", "psc", "sc"]  # rows without the param left out
    assert fig.layout.xaxis2.type == "log" and fig.layout.xaxis.type == "category"


def test_slices_of_a_conditional_integer_no_scored_trial_has():
    """A quickstart store: prototypes_per_class exists only for mpsc, and no completed trial was mpsc
    (its column is all null, nullable Int64): its panel is empty, the others drawn (was a crash)."""
    rows = pd.DataFrame({"trial_id": ["a", "b", "c"], "final_acc": [90.0, 92.0, 91.0],
                         "param.loss.contrastive": ["psc", "sc", "psc"],
                         "param.loss.prototypes_per_class": pd.array([None, None, None], dtype="Int64"),
                         "param.sampler.positives": pd.array([2, None, 5], dtype="Int64")})
    params = ["param.loss.contrastive", "param.loss.prototypes_per_class", "param.sampler.positives"]
    fig = fg.slice_figure(rows, params, "acc")
    assert [len(t.x) for t in fig.data] == [3, 0, 2]
    assert list(fig.data[2].x) == [2, 5] and fig.layout.xaxis3.dtick == 1


def test_pareto_front_highlighted():
    pts = pd.DataFrame({"trial_id": ["a", "b", "c"], "x": [0.9, 0.8, 0.7], "y": [0.1, 0.5, 0.4],
                        "on_front": [True, True, False]})
    fig = fg.pareto_figure(pts, "acc", "few_acc")
    assert list(fig.data[0].text) == ["c"] and list(fig.data[1].text) == ["b", "a"]  # front sorted by x
    assert "2 on the front" in fig.layout.title.text


def test_learning_curves_four_panels_one_legend_entry_per_trial():
    epochs = pd.DataFrame({"trial_id": ["a", "a", "b"], "epoch": [1, 2, 1], "acc": [0.1, 0.2, 0.3],
                           "few_acc": [0.0, 0.1, 0.2], "con_loss": [2, 1, 2], "ce_loss": [1, 0.5, 1],
                           "alpha": [1.0, 0.5, 1.0]})
    fig = fg.curves_figure(epochs, "few_acc", {"a": "red"})
    assert len(fig.data) == 8 and sum(t.showlegend for t in fig.data) == 2
    assert list(fig.data[0].y) == pytest.approx([0.0, 10.0]) and fig.layout.annotations[0].text == "few-shot accuracy %"


@pytest.mark.parametrize("call", [
    lambda: fg.class_heatmap_figure(q.class_matrix({}, []), [], "acc", 0),
    lambda: fg.class_rank_figure(q.class_curves({}, []), {}, [], False),
    lambda: fg.group_stats_figure(pd.DataFrame(), ""),
    lambda: fg.curve_bands_figure(pd.DataFrame(), "acc", {}),
    lambda: fg.class_delta_figure(pd.DataFrame(), np.zeros(0), "x"),
    lambda: fg.confusion_figure({}),
    lambda: fg.posthoc_figure({}),
    lambda: fg.history_figure(pd.DataFrame(), "acc"),
    lambda: fg.parallel_figure(pd.DataFrame({"trial_id": [], "final_acc": []}), [], "acc"),
    lambda: fg.curves_figure(pd.DataFrame(), "acc", {}),
])
def test_empty_inputs_give_a_chart_that_says_why(call):
    fig = call()
    assert len(fig.data) == 0 and fig.layout.annotations[0].text


# ---- many trials: densities and the best as marks (dashboards.dense) ------------------------------
@pytest.fixture
def many():
    rng = np.random.default_rng(0)
    n = dense.POINTS_MAX + 500
    return pd.DataFrame({"trial_id": [f"t{i:05d}" for i in range(n)], "final_acc": rng.uniform(10, 90, n),
                         "param.lr": np.exp(rng.uniform(np.log(1e-3), np.log(1.0), n)),
                         "param.loss": rng.choice(["sc", "psc", "mpsc"], n), "param.k": rng.integers(1, 5, n)})


def test_best_and_spread_keeps_the_best_and_the_range(many):
    picked = dense.best_and_spread(many, "final_acc", 200, 50)
    assert len(picked) == 200 and picked["trial_id"].is_unique
    assert set(many.nlargest(50, "final_acc")["trial_id"]) <= set(picked["trial_id"])
    assert many["final_acc"].min() == picked["final_acc"].min()
    assert dense.best_and_spread(many.head(10), "final_acc", 200, 50).equals(many.head(10))


def test_density_counts_every_point_once(many):
    d = dense.density(many["param.lr"], many["final_acc"], log_x=True)
    assert sum(v or 0 for row in d.z for v in row) == len(many) == d.total
    assert len(d.x) == dense.X_BINS + 1 and d.x[0] == pytest.approx(many["param.lr"].min())
    cats = dense.density(many["param.loss"], many["final_acc"], categorical=True)
    assert cats.x == ["mpsc", "psc", "sc"] and len(cats.z[0]) == 3
    ints = dense.density(many["param.k"], many["final_acc"])
    assert ints.x == [0.5, 1.5, 2.5, 3.5, 4.5]  # one bin per value


def test_slices_history_and_lines_of_many_trials_stay_small(many):
    params = ["param.lr", "param.loss", "param.k"]
    stopped = many.head(600).assign(final_acc=lambda f: f.final_acc / 2)
    fig = fg.slice_figure(many, params, "acc", stopped=stopped)
    assert [t.type for t in fig.data].count("heatmap") == 3 and "as a density" in fig.layout.title.text
    points = [t for t in fig.data if t.type == "scatter"]
    assert all(len(t.x) <= max(dense.BEST_MARKS, dense.OTHER_MARKS) for t in points)
    assert fig.layout.xaxis.type == "log"
    lines = fg.parallel_figure(many, params, "acc")
    drawn = [t for t in lines.data if t.mode == "lines"]
    assert sum(np.isnan(np.asarray(t.y, dtype=float)).sum() for t in drawn) == dense.LINES_MAX
    assert f"{dense.LINES_MAX:,} of {len(many):,} trials drawn" in lines.layout.title.text
    hist = gr.history(many.assign(status="completed"), {}, "acc")
    fig = fg.history_figure(hist, "acc")
    assert fig.data[0].type == "heatmap" and len(fig.data[1].x) == int((hist["best"].diff() != 0).sum())
    assert len(fig.data[-1].x) <= len(fig.data[1].x) + 1  # the best-so-far line: its steps only
