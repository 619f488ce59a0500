"""``hybridlt export-best --confirm K --seeds N`` on a real local Ray: the top K configs re-run on N new
seeds, the best mean exported, the numbers checked against a hand count and scipy's paired t-test."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")

from hybridlt.sweep.results import read_dataset  # noqa: E402
from tests.conftest import TINY  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "hybridlt.cli"]


def _run(args, cwd):
    return subprocess.run([*CLI, *args], cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=900)


def test_confirm_reruns_the_top_configs_on_new_seeds_and_exports_the_best_mean(tmp_path):
    from scipy import stats

    spec = {"name": "cf", "storage": str(tmp_path / "sweeps"), "base": str(ROOT / "configs" / "quickstart.yaml"),
            "overrides": [*TINY, "train.epochs=2", "seed=7"],
            "space": {"loss.temperature": {"loguniform": [0.05, 1.0]}, "loss.contrastive": {"choice": ["sc", "psc"]}},
            "scheduler": {"kind": "none"}, "trials": 3, "concurrency": 2}
    (tmp_path / "cf.yaml").write_text(yaml.safe_dump(spec))
    done = _run(["sweep", "cf.yaml", "--num-cpus", "2"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = tmp_path / "sweeps" / "cf" / "results"
    sweep_rows = read_dataset(results, "trials").to_pylist()
    top2 = sorted(sweep_rows, key=lambda r: r["final_acc"], reverse=True)[:2]

    out = tmp_path / "best.yaml"
    confirmed = _run(["export-best", str(results), "-o", str(out), "--confirm", "2", "--seeds", "2",
                      "--num-cpus", "2"], tmp_path)
    assert confirmed.returncode == 0, confirmed.stderr[-3000:]
    store = tmp_path / "sweeps" / "cf-confirm2x2" / "results"
    rows = read_dataset(store, "trials").to_pylist()
    assert len(rows) == 4 and all(r["status"] == "completed" for r in rows)
    assert {r["param.variant"] for r in rows} == {t["trial_id"] for t in top2}  # the top 2 of the sweep
    assert sorted({r["param.seed"] for r in rows}) == [8, 9]  # new seeds: base seed 7 + 1, + 2

    for r in rows:  # each re-run trained its candidate's searched values
        cand = next(t for t in top2 if t["trial_id"] == r["param.variant"])
        trained = yaml.safe_load(r["config_yaml"])
        assert math.isclose(trained["loss"]["temperature"], cand["param.loss.temperature"])
        assert trained["loss"]["contrastive"] == cand["param.loss.contrastive"] and trained["seed"] == r["param.seed"]

    by = {t["trial_id"]: {r["param.seed"]: 100 * r["final_acc"] for r in rows if r["param.variant"] == t["trial_id"]}
          for t in top2}
    means = {t: sum(v.values()) / len(v) for t, v in by.items()}
    winner = max(means, key=means.get)
    runner = next(t for t in means if t != winner)
    header = [line for line in out.read_text().splitlines() if line.startswith("#")]
    assert header[0].startswith("# chosen by --confirm 2 --seeds 2")
    assert any(line.startswith(f"#   {winner}: {means[winner]:.2f}%") for line in header)
    p = stats.ttest_rel([by[winner][s] for s in (8, 9)], [by[runner][s] for s in (8, 9)]).pvalue
    diffs = [by[winner][s] - by[runner][s] for s in (8, 9)]
    shown = f"paired Δ {sum(diffs) / 2:.2f}"
    assert any(shown in line and (math.isnan(p) or f"p = {p:.2f}" in line) for line in header), header
    exported = yaml.safe_load(out.read_text())
    original = yaml.safe_load(next(t for t in sweep_rows if t["trial_id"] == winner)["config_yaml"])
    assert exported == {**original, "name": f"{original['name']}-best"}  # the winner's own sweep config

    before = {p.name: p.stat().st_mtime for p in (store / "trials").glob("*.parquet")}
    again = _run(["export-best", str(results), "-o", str(out), "--confirm", "2", "--seeds", "2", "--force",
                  "--num-cpus", "2"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p.name: p.stat().st_mtime for p in (store / "trials").glob("*.parquet")} == before  # resumed: no re-run
    assert f"trial {winner}" in again.stdout
