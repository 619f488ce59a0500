"""Sweep specs fail fast, before Ray starts; conditional spaces sample only valid combinations."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from hybridlt.sweep.config import ConfigError
from hybridlt.sweep.searcher import DefineByRun
from hybridlt.sweep.spec import apply_params, load_sweep_spec
from hybridlt.sweep.tuner import concurrency_for

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "configs" / "sweeps" / "quickstart.yaml"


def _spec(tmp_path, **changes):
    doc = yaml.safe_load(QUICK.read_text())
    doc["base"] = str(ROOT / "configs" / "quickstart.yaml")
    for key, value in changes.items():
        node = doc
        *parents, last = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_shipped_specs_validate():
    for path in (ROOT / "configs" / "sweeps").glob("*.yaml"):
        spec, base = load_sweep_spec(path)
        assert spec.trials >= 1 and base.train.epochs >= 1


BAD_SPECS = [
    ({"space/loss.tau": {"uniform": [0.1, 1]}}, "space.loss.tau: not a field of the run config"),
    ({"space/loss.temperature": {"uniform": [1, 0.1]}}, "low 1.0 must be < high 0.1"),
    ({"space/loss.temperature": {"loguniform": [0, 1]}}, "must be > 0"),
    ({"space/loss.temperature": {"uniform": [-1, 1]}}, "space.loss.temperature: value -1.0 is not allowed"),
    ({"space/loss.contrastive": {"choice": ["sc", "simclr"]}}, "value 'simclr' is not allowed"),
    ({"space/loss.temperature": {"uniform": [0.1, 1], "choice": [1]}}, "exactly one distribution"),
    ({"space/loss.temperature": {"normal": [0, 1]}}, "space.loss.temperature.normal: unknown key"),
    ({"space/loss.temperature": {"choice": []}}, "at least one value"),
    ({"space/loss.temperature": {"grid": [0.1, 1.0]}}, "need search.algorithm: grid"),
    ({"space/curriculum.power": {"uniform": [1, 2], "when": {"curriculum.shape": "power"}}},
     "curriculum.shape is neither a field nor an earlier parameter"),
    ({"objective/metric": "top5"}, "unknown metric 'top5'"),
    ({"objective/mode": "maximise"}, "objective.mode"),
    ({"objective/metric": ["acc", "few_acc"], "objective/mode": ["max"]}, "1 modes for 2 metrics"),
    ({"search/algorithm": "bayes"}, "search.algorithm"),
    ({"scheduler/kind": "pbt"}, "scheduler.kind"),
    ({"scheduler/reduction_factor": 1}, "scheduler.reduction_factor"),
    ({"resources/gpus_per_worker": -1}, "resources.gpus_per_worker"),
    ({"trials": 0}, "trials"),
    ({"name": "../escape"}, "name"),
    ({"base": "missing.yaml"}, "missing.yaml: file not found"),
    ({"overrides": ["loss.temperature=-2"]}, "loss.temperature"),
    ({"budget": 3}, "budget: unknown key"),
]


@pytest.mark.parametrize("changes, expected", BAD_SPECS, ids=[e for _, e in BAD_SPECS])
def test_bad_specs_fail_before_ray(tmp_path, changes, expected):
    with pytest.raises(ConfigError) as info:
        load_sweep_spec(_spec(tmp_path, **changes))
    assert expected in str(info.value)


def test_conditional_space_samples_only_valid_combinations(tmp_path):
    spec, base = load_sweep_spec(_spec(tmp_path))
    space = DefineByRun(spec, base.model_dump(mode="json"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(300):
        trial = study.ask()
        space(trial)
        p = trial.params
        seen.add(p["loss.contrastive"])
        assert ("loss.prototypes_per_class" in p) == (p["loss.contrastive"] == "mpsc")
        assert ("sampler.contrastive" in p) == (p["loss.contrastive"] == "sc")
        assert ("sampler.positives" in p) == (p.get("sampler.contrastive") == "positives")
        assert ("curriculum.power" in p) == (p["curriculum.kind"] == "power")
        assert 0.05 <= p["loss.temperature"] <= 1.0
        apply_params(base, p)  # every sampled combination is a valid run config
        study.tell(trial, 0.0)
    assert seen == {"sc", "psc", "mpsc"}


def test_concurrency_never_oversubscribes(tmp_path):
    spec, _ = load_sweep_spec(_spec(tmp_path, concurrency=None, **{"resources/workers": 2}))
    assert concurrency_for(spec, cpus=2, gpus=0) == 1
    spec, _ = load_sweep_spec(_spec(tmp_path, concurrency=None, **{"resources/gpus_per_worker": 0.25}))
    assert concurrency_for(spec, cpus=16, gpus=1) == 4  # four trials share one GPU
    spec, _ = load_sweep_spec(_spec(tmp_path, **{"resources/workers": 4}))
    with pytest.raises(ConfigError, match="resources"):
        concurrency_for(spec, cpus=2, gpus=0)


def test_a_grid_counts_every_combination(tmp_path):
    """An ablation grid of 3 variants x 5 seeds with trials=1 is 15 trials, and runs 2 at a time on 2 CPUs."""
    from hybridlt.sweep.ablate import as_sweep, load_ablation_spec
    from hybridlt.sweep.ledger import grid_combos, total_trials

    spec, _ = load_ablation_spec(ROOT / "configs" / "ablations" / "digits_table4.yaml")
    sweep = as_sweep(spec)
    assert total_trials(sweep) == 15
    combos = grid_combos(sweep)  # the variants are one grid parameter, the seeds another
    assert len(combos) == 15 and {(c["variant"], c["seed"]) for c in combos} == {
        (v, s) for v in spec.variants for s in spec.seeds}
    assert concurrency_for(sweep, cpus=2, gpus=0, trials=total_trials(sweep)) == 2
