"""Statistics over seeds for ablations and the dashboard's paired comparison: mean, std, 95% CI (t
quantile), and against a reference variant the mean paired difference with its 95% CI and the paired
t-test p over seeds matched by ``param.seed``. Torch-free (numbers in, numbers out): ``hybridlt ablate``
and the dashboard compute their tables here, so both show the same numbers.
"""

from __future__ import annotations

import math

from hybridlt.sweep.metrics import ACCURACY_METRICS, METRICS


def t_quantile(df: int) -> float:
    """The two-sided 95% quantile of Student's t with ``df`` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def paired_p(a: list[float], b: list[float]) -> float | None:
    """Paired t-test p of ``a`` against ``b`` (None under 2 pairs; 1 or 0 when the differences do not vary)."""
    if len(a) < 2:
        return None
    from scipy import stats

    diffs = [x - y for x, y in zip(a, b, strict=True)]
    if all(d == diffs[0] for d in diffs):
        return 1.0 if diffs[0] == 0 else 0.0  # no spread: identical, or a constant shift
    return float(stats.ttest_rel(a, b).pvalue)


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """``(mean, std, half-width of the 95% CI)`` with the sample std (n - 1); NaN where n is too small."""
    n = len(values)
    mean = sum(values) / n if n else math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return mean, std, t_quantile(n - 1) * std / math.sqrt(n) if n > 1 else math.nan


def ablation_report(trials: list[dict], variants: list[str], reference: str,
                    metrics: tuple[str, ...] = ACCURACY_METRICS) -> list[dict]:
    """One row per variant and metric: n, mean, std, 95% CI, and against ``reference`` the mean paired
    difference (``diff_vs_ref``, its 95% CI ``diff_ci95_low/high``) and the paired t-test p.

    Accuracies in %; only completed trials count; seeds pair by ``param.seed``; ``metrics`` name
    the trials' ``final_<metric>`` keys.
    """
    done = [t for t in trials if t["status"] == "completed"]
    by_variant = {v: {t["param.seed"]: t for t in done if t["param.variant"] == v} for v in variants}
    rows = []
    for variant in variants:
        for metric in metrics:
            key = f"final_{metric}"
            values = {s: 100 * t[key] for s, t in by_variant[variant].items() if _number(t.get(key))}
            n = len(values)
            mean, std, half = mean_ci(list(values.values()))
            name = METRICS[metric].label if metric in METRICS else metric
            row = {"variant": variant, "metric": name, "n": n, "mean": mean, "std": std,
                   "ci95_low": mean - half, "ci95_high": mean + half, "diff_vs_ref": None, "diff_ci95_low": None,
                   "diff_ci95_high": None, "n_pairs": 0, "p_paired": None}
            if variant != reference:
                ref = {s: 100 * t[key] for s, t in by_variant.get(reference, {}).items() if _number(t.get(key))}
                common = sorted(set(values) & set(ref))
                if common:
                    diff, _, dhalf = mean_ci([values[s] - ref[s] for s in common])
                    row |= {"diff_vs_ref": diff, "n_pairs": len(common),
                            "diff_ci95_low": None if math.isnan(dhalf) else diff - dhalf,
                            "diff_ci95_high": None if math.isnan(dhalf) else diff + dhalf,
                            "p_paired": paired_p([values[s] for s in common], [ref[s] for s in common])}
            rows.append(row)
    return rows


def _number(value) -> bool:
    return value is not None and value == value  # NaN != NaN
