"""Seed groups, budgets and paired statistics against hand-built numbers and scipy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats

from hybridlt.dashboards import groups as gr

# two variants x three seeds; "b" is better by 2, 3 and 4 points on seeds 0, 1, 2 (a paired design)
A_ACC, B_ACC = [0.70, 0.60, 0.80], [0.72, 0.63, 0.84]


def trials() -> pd.DataFrame:
    rows = []
    for v, accs in (("a", A_ACC), ("b", B_ACC)):
        for s, acc in enumerate(accs):
            rows.append({"trial_id": f"{v}{s}", "status": "completed", "epochs_done": 4, "param.variant": v,
                         "param.seed": s, **{f"final_{m}": acc for m in ("acc", "balanced_acc", "many_acc",
                                                                        "medium_acc", "few_acc")}})
    rows.append({"trial_id": "b9", "status": "stopped", "epochs_done": 2, "param.variant": "b", "param.seed": 9,
                 "final_acc": 0.1})
    return pd.DataFrame(rows)


def test_seed_is_not_a_hyperparameter_and_groups_are_variants():
    frame = trials()
    params = ["param.variant", "param.seed"]
    assert gr.hyperparams(params) == ["param.variant"]
    labels = gr.group_labels(frame, params)
    assert labels["a1"] == "a" and labels["b9"] == "b" and gr.seeds_of(frame)["b2"] == 2
    swept = pd.DataFrame({"trial_id": ["x", "y", "z"], "param.lr": [0.1, 0.01, 0.1], "param.loss": ["sc", "psc", "sc"],
                          "param.seed": [0, 0, 1]})
    labels = gr.group_labels(swept, ["param.lr", "param.loss", "param.seed"])
    assert list(labels) == ["lr=0.1, loss=sc", "lr=0.01, loss=psc", "lr=0.1, loss=sc"]  # x and z: one config
    assert list(gr.group_labels(swept.drop(columns="param.seed"), ["param.lr", "param.loss"])) == ["x", "y", "z"]


def test_final_budget_scores_completed_trials_and_marks_stopped_ones():
    budget = gr.apply_budget(trials(), "final")
    f = budget.frame.set_index("trial_id")
    assert f.loc["b9", "status"] == "stopped_early" and not f.loc["b9", "scored"] and f.loc["a0", "scored"]
    assert "6 scored" in budget.note and "1 stopped early" in budget.note
    assert gr.common_epoch(trials()) == 2


def test_common_budget_takes_every_trial_at_that_epoch():
    frame = trials()
    at = pd.DataFrame({"trial_id": frame["trial_id"], "acc": np.arange(len(frame)) / 10})
    budget = gr.apply_budget(frame, "common", at, 2)
    assert budget.frame["scored"].all() and list(budget.frame["final_acc"]) == list(at["acc"])
    assert "epoch 2" in budget.note


def test_group_report_matches_hand_values_and_scipy():
    frame = trials()
    labels, seeds = gr.group_labels(frame, ["param.variant", "param.seed"]), gr.seeds_of(frame)
    report = gr.group_report(gr.apply_budget(frame, "final"), labels, seeds, ["a", "b"], "a", ("acc",))
    a, b = report.set_index("variant").loc["a"], report.set_index("variant").loc["b"]
    assert a["n"] == 3 and a["mean"] == pytest.approx(70.0)  # (70 + 60 + 80) / 3; b9 (stopped) left out
    sd = math.sqrt(((70 - 70) ** 2 + (60 - 70) ** 2 + (80 - 70) ** 2) / 2)  # 10
    assert a["std"] == pytest.approx(sd) and a["ci95_high"] - 70 == pytest.approx(4.302653 * sd / math.sqrt(3))
    diffs = [2.0, 3.0, 4.0]  # b - a per seed, in points
    assert b["diff_vs_ref"] == pytest.approx(3.0) and b["n_pairs"] == 3
    half = stats.t.ppf(0.975, 2) * np.std(diffs, ddof=1) / math.sqrt(3)  # 4.3027 * 1 / 1.732 = 2.484
    assert b["diff_ci95_low"] == pytest.approx(3.0 - half) and b["diff_ci95_high"] == pytest.approx(3.0 + half)
    assert b["p_paired"] == pytest.approx(stats.ttest_rel([72, 63, 84], [70, 60, 80]).pvalue)
    t = 3.0 / (1.0 / math.sqrt(3))  # 5.196 with df 2, where the two-sided p is 1 - t / sqrt(2 + t^2)
    assert b["p_paired"] == pytest.approx(1 - t / math.sqrt(2 + t * t)) == pytest.approx(0.0351, abs=1e-4)


def test_per_class_report_orders_classes_and_pairs_seeds():
    frame = trials()
    labels, seeds = gr.group_labels(frame, ["param.variant", "param.seed"]), gr.seeds_of(frame)

    def table(accs):  # already rank-sorted: class "head" has the most images
        return pa.table({"class_name": ["head", "tail"], "train_count": [100, 5], "accuracy": accs})

    per_class = {"a0": table([0.9, 0.1]), "a1": table([0.8, 0.2]), "a2": table([0.9, 0.0]),
                 "b0": table([0.9, 0.3]), "b1": table([0.8, 0.3]), "b2": table([0.8, 0.2])}
    report, counts, names = gr.class_report(per_class, gr.apply_budget(frame, "final"), labels, seeds, ["a", "b"],
                                            "a")
    assert list(counts) == [100, 5] and names == ["head", "tail"]
    tail = report[(report["variant"] == "b") & (report["metric"] == "class00001")].iloc[0]
    assert tail["diff_vs_ref"] == pytest.approx((20 + 10 + 20) / 3)
    assert tail["p_paired"] == pytest.approx(stats.ttest_rel([30, 30, 20], [10, 20, 0]).pvalue)


def test_seed_means_per_class_and_curve_bands():
    t = pa.table({"class_name": ["x", "y"], "train_count": [9, 1], "accuracy": [0.5, 0.2]})
    u = pa.table({"class_name": ["x", "y"], "train_count": [9, 1], "accuracy": [0.7, 0.4]})
    mean = gr.mean_per_class({"t": t, "u": u}, {"g": ["t", "u"]})
    assert mean["g"].column("accuracy").to_pylist() == pytest.approx([0.6, 0.3])
    epochs = pd.DataFrame({"trial_id": ["t", "u", "t", "u"], "epoch": [1, 1, 2, 2], "acc": [0.5, 0.7, 0.6, 0.6]})
    bands = gr.curve_bands(epochs, pd.Series({"t": "g", "u": "g"}), "acc").set_index("epoch")
    assert bands.loc[1, "mean"] == pytest.approx(0.6) and bands.loc[2, "half"] == pytest.approx(0.0)
    assert bands.loc[1, "half"] == pytest.approx(stats.t.ppf(0.975, 1) * np.std([0.5, 0.7], ddof=1) / math.sqrt(2))


def test_history_orders_by_start_and_tracks_the_best_completed():
    frame = pd.DataFrame({"trial_id": ["x", "y", "z"], "status": ["completed", "stopped", "completed"],
                          "final_acc": [0.5, 0.9, 0.7]})
    hist = gr.history(frame, {"x": 30, "y": 10, "z": 20}, "acc")
    assert list(hist["trial_id"]) == ["y", "z", "x"] and list(hist["status"])[0] == "stopped_early"
    assert math.isnan(hist["best"][0]) and list(hist["best"][1:]) == [0.7, 0.7]  # y stopped: not a best


def test_config_diff_names_only_the_differing_keys():
    a = {"config_yaml": "loss: {temperature: 0.1, contrastive: sc}\nseed: 0\n"}
    b = {"config_yaml": "loss: {temperature: 0.1, contrastive: psc}\nseed: 1\nextra: 3\n"}
    assert gr.config_diff(a, b) == [("extra", None, 3), ("loss.contrastive", "sc", "psc"), ("seed", 0, 1)]
