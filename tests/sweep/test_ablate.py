"""Ablation statistics against hand values, ablation specs that fail fast, and the report files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from hybridlt.sweep.ablate import ablation_report, load_ablation_spec, report_csv, report_markdown
from hybridlt.sweep.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _trial(variant, seed, acc, few=0.5, status="completed"):
    return {"trial_id": f"{variant}-{seed}", "status": status, "param.variant": variant, "param.seed": seed,
            "final_acc": acc, "final_balanced_acc": acc, "final_many_acc": 0.9, "final_medium_acc": None,
            "final_few_acc": few}


def test_mean_std_ci_and_paired_test_by_hand():
    trials = [_trial("ref", s, a) for s, a in zip((0, 1, 2), (0.80, 0.82, 0.84), strict=True)]
    trials += [_trial("new", s, a) for s, a in zip((0, 1, 2), (0.81, 0.84, 0.87), strict=True)]  # diffs 1, 2, 3 pts
    trials.append(_trial("new", 3, 0.99, status="failed"))  # failed trials never count
    rows = {(r["variant"], r["metric"]): r for r in ablation_report(trials, ["ref", "new"], "ref")}
    ref, new = rows["ref", "overall"], rows["new", "overall"]
    assert ref["n"] == 3 and ref["mean"] == pytest.approx(82.0) and ref["std"] == pytest.approx(2.0)
    # 95% CI: mean ± t(0.975, 2) * s / sqrt(3), t = 4.302653
    assert ref["ci95_high"] - ref["mean"] == pytest.approx(4.302653 * 2 / math.sqrt(3), rel=1e-5)
    # paired differences 1, 2, 3: t = 2 / (1 / sqrt 3) = 3.4641, two-sided p with 2 df = 0.07418
    assert new["diff_vs_ref"] == pytest.approx(2.0) and new["p_paired"] == pytest.approx(0.07418, abs=1e-4)
    assert ref["diff_vs_ref"] is None and ref["p_paired"] is None
    assert rows["new", "medium"]["n"] == 0 and math.isnan(rows["new", "medium"]["mean"])  # an empty group
    assert rows["new", "few"]["p_paired"] == 1.0  # identical values: no difference at all
    text = report_markdown(list(rows.values()), "ref", "t")
    assert "| new | 3 |" in text and "82.00 ± 2.00" in text
    assert report_csv(list(rows.values())).splitlines()[0].startswith("variant,metric,n,mean,std")


def _spec(tmp_path, **changes):
    doc = yaml.safe_load((ROOT / "configs" / "ablations" / "digits_table4.yaml").read_text())
    doc["base"] = str(ROOT / "configs" / "quickstart.yaml")
    doc.update(changes)
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("changes, expected", [
    ({"reference": "nope"}, "reference: 'nope' is not a variant"),
    ({"seeds": [1, 1]}, "repeats a seed"),
    ({"seeds": []}, "seeds"),
    ({"variants": {}}, "at least one variant"),
    ({"variants": {"bad": ["loss.temperature=-1"]}, "reference": "bad"}, "variants.bad: loss.temperature"),
    ({"variants": {"bad": ["loss.nope=1"]}, "reference": "bad"}, "variants.bad: loss.nope: unknown key"),
    ({"repeats": 3}, "repeats: unknown key"),
])
def test_bad_ablation_specs_fail_before_ray(tmp_path, changes, expected):
    with pytest.raises(ConfigError, match=expected):
        load_ablation_spec(_spec(tmp_path, **changes))


def test_shipped_ablation_specs_validate():
    for path in (ROOT / "configs" / "ablations").glob("*.yaml"):
        spec, base = load_ablation_spec(path)
        assert spec.reference_variant in spec.variants and len(spec.seeds) >= 3
