"""Ablations: named variants (``--set`` overrides of a base config) x seeds, run as one Ray Tune
grid through the sweep machinery (same store, same resume), then a table per variant of mean ± std
over seeds with a 95% confidence interval and, against a reference variant, a paired t-test over
seeds (same seed = same data order and initialisation).

``ablation_report`` needs only the store: ``hybridlt ablate --report STORE`` rebuilds the table
without Ray.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import Field, model_validator
from pydantic import Strict as Strict_

from hybridlt.sweep.config import ConfigError, Int, Name, RunConfig, Seed, apply_overrides, validate_run_config
from hybridlt.sweep.paired import ablation_report
from hybridlt.sweep.results import open_store, read_dataset
from hybridlt.sweep.spec import Resources, Strict, SweepSpec, read_spec
from hybridlt.sweep.store import Location, write_text_atomic

__all__ = ["AblationSpec", "ablation_report", "report_cells", "report_markdown"]  # the statistics: sweep.paired


class AblationSpec(Strict):
    name: Name
    storage: str = "runs/ablations"
    base: str | dict
    overrides: list[str] = Field(default_factory=list)
    variants: dict[str, list[str]] = Field(description="variant name -> --set overrides of the base")
    reference: str | None = Field(None, description="the variant the others are tested against (default: first)")
    seeds: list[Annotated[Seed, Strict_()]] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=1)
    resources: Resources = Resources()
    concurrency: Int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self):
        if not self.variants:
            raise ValueError("variants: at least one variant is required")
        if self.reference is not None and self.reference not in self.variants:
            raise ValueError(f"reference: {self.reference!r} is not a variant; allowed: {sorted(self.variants)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: {self.seeds} repeats a seed")
        return self

    @property
    def reference_variant(self) -> str:
        return self.reference or next(iter(self.variants))


def load_ablation_spec(path: str | Path, overrides: list[str] = ()) -> tuple[AblationSpec, RunConfig]:
    """Read an ablation spec and check every variant's config before Ray starts."""
    spec, base = read_spec(path, overrides, AblationSpec, "ablation spec")
    for name, sets in spec.variants.items():
        validate_run_config(apply_overrides(base.model_dump(mode="json"), list(sets)), f"variants.{name}")
    return spec, base


def as_sweep(spec: AblationSpec) -> SweepSpec:
    """The Tune grid that runs the ablation: the variants and the seeds are two grid parameters."""
    space = {"variant": {"variants": spec.variants}, "seed": {"grid": list(spec.seeds)}}
    return SweepSpec(name=spec.name, storage=spec.storage, base=spec.base, overrides=spec.overrides, space=space,
                     objective={"metric": "acc", "mode": "max"}, search={"algorithm": "grid"},
                     scheduler={"kind": "none"}, resources=spec.resources, trials=1, concurrency=spec.concurrency)


def run_ablation(spec: AblationSpec, base: RunConfig, resume: bool = False, address: str | None = None, show=None,
                 num_cpus: int | None = None):
    from hybridlt.sweep.tuner import run_sweep

    root = Location.of(f"{spec.storage.rstrip('/')}/{spec.name}")
    trials, seconds = run_sweep(as_sweep(spec), base, resume, address, show, num_cpus)
    write_text_atomic(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), root / "ablation.yaml")
    return trials, seconds


def _fmt(x, digits=2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def report_cells(rows: list[dict], with_ci: bool = True) -> tuple[list[str], list[list[str]]]:
    """The ablation table as text: a header and one row per variant (n, ``mean ± std`` per metric with
    the 95% CI if asked, then Δ and p against the reference for overall and few-shot accuracy)."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    header = ["variant", "n", *metrics, "Δ overall", "p overall", "Δ few", "p few"]
    body = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        cells = {r["metric"]: r for r in rows if r["variant"] == variant}
        stats = [f"{_fmt(c['mean'])} ± {_fmt(c['std'])}"
                 + (f" [{_fmt(c['ci95_low'], 1)}, {_fmt(c['ci95_high'], 1)}]" if with_ci else "")
                 for c in cells.values()]
        ov, few = cells.get("overall", {}), cells.get("few", {})
        tests = [_fmt(ov.get("diff_vs_ref")), _fmt(ov.get("p_paired"), 3), _fmt(few.get("diff_vs_ref")),
                 _fmt(few.get("p_paired"), 3)]
        body.append([variant, str(next(iter(cells.values()))["n"]), *stats, *tests])
    return header, body


def report_markdown(rows: list[dict], reference: str, title: str) -> str:
    header, body = report_cells(rows)
    lines = [f"### {title}", "", f"Top-1 % at the last epoch, mean ± std over seeds [95% CI]; Δ and p: paired t-test "
             f"over seeds against `{reference}`.", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def report_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def report_from_store(store: str | Path, reference: str | None = None) -> tuple[list[dict], str, str, Location]:
    """Rebuild the ablation table of a finished (or partial) store, without Ray."""
    results = open_store(store)
    trials = read_dataset(results, "trials")
    if trials is None:
        raise ConfigError(f"--report: {store} holds no finished trial yet")
    rows = trials.to_pylist()
    if not rows or "param.variant" not in rows[0]:
        raise ConfigError(f"--report: {store} is not an ablation store (no param.variant column)")
    root = Location(results.fs, results.path.rsplit("/", 1)[0])
    spec_file = root / "ablation.yaml"
    spec = yaml.safe_load(spec_file.read_bytes()) if spec_file.exists() else {}
    variants = list(spec.get("variants") or dict.fromkeys(r["param.variant"] for r in rows))
    ref = reference or spec.get("reference") or variants[0]
    if ref not in variants:
        raise ConfigError(f"--reference: {ref!r} is not a variant; allowed: {variants}")
    return ablation_report(rows, variants, ref), ref, spec.get("name") or root.name, root


def write_reports(rows: list[dict], reference: str, title: str, root: Location) -> tuple[Location, Location]:
    md, csv_loc = root / "ablation.md", root / "ablation.csv"
    write_text_atomic(report_markdown(rows, reference, title), md)
    write_text_atomic(report_csv(rows), csv_loc)
    return md, csv_loc
