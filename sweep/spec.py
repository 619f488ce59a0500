"""Sweep specs: a base run config, a search space, objective(s), search algorithm, scheduler,
resources, trials, concurrency and storage. Validated before Ray starts (``ConfigError``).

A space entry maps a dotted config path to one distribution, with an optional ``when``
condition on values sampled before it (or fixed in the base config)::

    loss.contrastive: {choice: [sc, psc, mpsc]}
    loss.temperature: {loguniform: [0.05, 1.0]}
    loss.prototypes_per_class: {int: [1, 4], when: {loss.contrastive: mpsc}}
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator, model_validator

from hybridlt.sweep.config import (
    MISSING,
    Bool,
    ConfigError,
    Float,
    Int,
    Name,
    RunConfig,
    Seed,
    absolute_path,
    absolute_path_overrides,
    apply_overrides,
    format_validation_error,
    get_path,
    is_data_path,
    no_bool_confusion,
    override_list,
    parse_override,
    read_yaml,
    resolve_data_paths,
    set_path,
    validate_run_config,
)
from hybridlt.sweep.metrics import FINAL_METRICS, METRICS
from hybridlt.sweep.search import SCHEDULERS, SEARCH_ALGORITHMS

DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice", "grid", "variants")
GRID_KINDS = ("grid", "choice", "variants")  # what a grid search can enumerate


IntRange = tuple[Int, Int]  # named before Param, whose field "int" shadows the builtin


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    _no_bool_confusion = field_validator("*", mode="before")(classmethod(no_bool_confusion))


class Param(Strict):
    loguniform: tuple[Float, Float] | None = None
    uniform: tuple[Float, Float] | None = None
    int: IntRange | None = None
    choice: list[Any] | None = None
    grid: list[Any] | None = None
    variants: dict[str, list[str]] | None = Field(None, description="named --set override lists (ablation "
                                                  "variants): a grid over the names, key 'variant'")
    log: Bool = Field(False, description="int: sample on a log scale")
    when: dict[str, Any | list[Any]] = Field(default_factory=dict,
                                             description="sample only when these paths have these values")

    @model_validator(mode="after")
    def _one(self):
        given = [d for d in DISTRIBUTIONS if getattr(self, d) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one distribution of {DISTRIBUTIONS} is required, got {given or 'none'}")
        kind = given[0]
        bounds = getattr(self, kind)
        if kind in ("loguniform", "uniform", "int") and not bounds[0] < bounds[1]:
            raise ValueError(f"{kind}: low {bounds[0]} must be < high {bounds[1]}")
        if kind == "loguniform" and bounds[0] <= 0:
            raise ValueError(f"loguniform: low {bounds[0]} must be > 0")
        if kind in GRID_KINDS and not bounds:
            raise ValueError(f"{kind}: at least one value is required")
        return self

    @property
    def kind(self) -> str:
        return next(d for d in DISTRIBUTIONS if getattr(self, d) is not None)

    @property
    def values(self) -> list:
        """The values a grid enumerates (variant names for ``variants``), or a range's bounds."""
        value = getattr(self, self.kind)
        return list(value) if self.kind == "variants" else value


class Objective(Strict):
    metric: str | list[str] = "acc"
    mode: Literal["max", "min"] | list[Literal["max", "min"]] | None = Field(
        None, description="default: each metric's own direction (max for accuracies, min for losses)")

    @model_validator(mode="after")
    def _shape(self):
        metrics = self.metrics
        for m in metrics:
            if m not in FINAL_METRICS:
                raise ValueError(f"objective.metric: unknown metric {m!r}; allowed: {', '.join(FINAL_METRICS)}")
        if isinstance(self.mode, list) and len(self.mode) != len(metrics):
            raise ValueError(f"objective.mode: {len(self.mode)} modes for {len(metrics)} metrics")
        return self

    @property
    def metrics(self) -> list[str]:
        return self.metric if isinstance(self.metric, list) else [self.metric]

    @property
    def modes(self) -> list[str]:
        if isinstance(self.mode, list):
            return self.mode
        return [self.mode or METRICS[m].direction for m in self.metrics]


class Search(Strict):
    algorithm: Literal[SEARCH_ALGORITHMS.names()] = "tpe"  # type: ignore[valid-type]
    seed: Seed = 0
    storage: str | None = Field(None, description="the Optuna study's database: an SQLAlchemy URL "
                                                  "(default: an SQLite file, see sweep/study.py)")

    @field_validator("storage")
    @classmethod
    def _url(cls, value):
        if value is None:
            return value
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value)
        except ArgumentError:
            raise ValueError(f"{value!r} is not an SQLAlchemy database URL (e.g. sqlite:///path/optuna.db "
                             f"or postgresql://user@host/db)") from None
        return value

    @field_serializer("storage")
    def _hide_password(self, value):  # sweep.yaml records the URL, never a password in it
        from sqlalchemy.engine import make_url

        return None if value is None else make_url(value).render_as_string(hide_password=True)


class Tracking(Strict):
    """Experiment trackers, all off by default, wired as Ray Tune logger callbacks (sweep/tracking.py)."""

    mlflow: str | None = Field(None, description="an MLflow tracking URI (http://host:5000, a folder, ...)")
    tensorboard: bool = Field(False, description="TensorBoard event files in each trial's folder")
    wandb: Literal["off", "offline", "online"] = "off"
    project: str | None = Field(None, description="MLflow experiment / W&B project (default: the sweep name)")


class Scheduler(Strict):
    kind: Literal[SCHEDULERS.names()] = "asha"  # type: ignore[valid-type]
    grace_period: Int = Field(5, ge=1, description="epochs every trial runs before ASHA may stop it")
    reduction_factor: Float = Field(3.0, gt=1.0)


class Resources(Strict):
    workers: Int = Field(1, ge=1, description="DDP workers per trial (Ray Train)")
    cpus_per_worker: Float = Field(1.0, gt=0)
    gpus_per_worker: Float = Field(0.0, ge=0, description="fractional: 0.25 = four trials share a GPU")
    use_train: Bool | None = Field(None, description="run one-worker trials through Ray Train too "
                                                     "(default: only when workers > 1)")
    max_failures: Int = Field(2, ge=0, description="restarts of a trial from its checkpoint after a lost worker")


class SweepSpec(Strict):
    name: Name
    storage: str = "runs/sweeps"
    base: str | dict = Field(description="a run config: a YAML path (relative to the spec) or a mapping")
    overrides: list[str] = Field(default_factory=list, description="--set style overrides of the base")
    space: dict[str, Param]
    objective: Objective = Objective()
    search: Search = Search()
    scheduler: Scheduler = Scheduler()
    resources: Resources = Resources()
    tracking: Tracking = Tracking()
    trials: Int = Field(16, ge=1, le=100_000, description="trials to run (grid: repeats of the whole grid)")
    concurrency: Int | None = Field(None, ge=1, description="default: as many as the resources allow")
    time_budget_s: Float | None = Field(None, gt=0)

    @property
    def storage_uri(self) -> str:
        """``storage`` as an absolute path (relative ones against the working directory) or a URI."""
        return self.storage if "://" in self.storage else str(Path(self.storage).expanduser().resolve())

    @model_validator(mode="after")
    def _algorithm_fits(self):
        has_grid = any(p.kind in ("grid", "variants") for p in self.space.values())
        if has_grid and self.search.algorithm != "grid":
            raise ValueError("space: 'grid' and 'variants' parameters need search.algorithm: grid "
                             "(Optuna cannot mix them)")
        bad_variant = [k for k, p in self.space.items() if p.kind == "variants" and k != "variant"]
        if bad_variant:
            raise ValueError(f"space.{bad_variant[0]}: a 'variants' parameter must be named 'variant'")
        if self.search.algorithm == "grid":
            bad = [k for k, p in self.space.items() if p.kind not in GRID_KINDS or p.when]
            if bad:
                raise ValueError(f"search.algorithm grid: every parameter must be grid or choice without 'when' "
                                 f"({bad[0]} is not)")
        if len(self.objective.metrics) > 1 and self.search.algorithm == "grid":
            raise ValueError("objective: several metrics need search.algorithm tpe or random")
        return self


def _check_space(spec: SweepSpec, base: RunConfig) -> None:
    """Every parameter names a config field, every value validates, every condition is reachable."""
    raw = base.model_dump(mode="json")
    seen: dict[str, Param] = {}
    for path, param in spec.space.items():
        if param.kind == "variants":
            for name, sets in param.variants.items():
                validate_run_config(apply_overrides(base.model_dump(mode="json"), list(sets)), f"variants.{name}")
            seen[path] = param
            continue
        if get_path(raw, path) is MISSING:
            raise ConfigError(f"space.{path}: not a field of the run config")
        for cond_path in param.when:
            if cond_path not in seen and get_path(raw, cond_path) is MISSING:
                raise ConfigError(f"space.{path}.when: {cond_path} is neither a field nor an earlier parameter")
        for value in param.values:  # every choice, or both bounds of a range
            try:
                trial_raw = base.model_dump(mode="json")
                set_path(trial_raw, path, value)
                RunConfig.model_validate(trial_raw)
            except ValidationError as exc:
                first = format_validation_error(exc, f"space.{path}").splitlines()[0]
                raise ConfigError(f"space.{path}: value {value!r} is not allowed ({first})") from None
        seen[path] = param


def apply_params(base: RunConfig, params: dict[str, Any], space: dict[str, Param] | None = None) -> RunConfig:
    """The trial's run config: base with sampled parameters (dotted paths) applied and validated.

    A ``variants`` parameter of ``space`` (key ``variant``) names an override list, applied first.
    """
    raw = base.model_dump(mode="json")
    params = dict(params)
    variant = (space or {}).get("variant")
    if variant is not None and variant.kind == "variants" and "variant" in params:
        raw = apply_overrides(raw, list(variant.variants[params.pop("variant")]))
    for path, value in params.items():
        set_path(raw, path, value)
    return validate_run_config(raw, "trial")


def load_base(spec, spec_dir: Path) -> RunConfig:
    """The base run config of a sweep or ablation spec (``base`` path relative to the spec, or inline)."""
    if isinstance(spec.base, str):
        base_path = (spec_dir / spec.base) if not Path(spec.base).is_absolute() else Path(spec.base)
        raw = resolve_data_paths(read_yaml(base_path, "base"), base_path.resolve().parent)
        source = str(base_path)
    else:  # an inline base: its paths resolve against the spec's folder
        raw, source = resolve_data_paths(copy.deepcopy(dict(spec.base)), spec_dir), "base"
    return validate_run_config(apply_overrides(raw, spec.overrides), source)


def _spec_paths_absolute(raw: dict, spec_dir: Path) -> None:
    """The data paths in a spec's override lists (``overrides``, ablation ``variants``, a ``variants``
    parameter) and the grid or choice values of a searched data path, made absolute against the
    spec's folder, where they are written: a trial applies them in Ray's working folder. (Those
    given with ``--set`` were made absolute against the working directory.)"""
    if override_list(raw.get("overrides")):
        raw["overrides"] = absolute_path_overrides(raw["overrides"], spec_dir)
    space = raw.get("space") if isinstance(raw.get("space"), dict) else {}
    for key, param in space.items():  # a searched data path: its grid or choice values
        for dist in ("grid", "choice"):
            if is_data_path(key) and isinstance(param, dict) and isinstance(param.get(dist), list):
                param[dist] = [absolute_path(v, spec_dir) for v in param[dist]]
    for variants in [raw.get("variants"), *(p.get("variants") for p in space.values() if isinstance(p, dict))]:
        if isinstance(variants, dict):
            for name, sets in variants.items():
                if override_list(sets):
                    variants[name] = absolute_path_overrides(sets, spec_dir)


def read_spec(path: str | Path, overrides: list[str], model: type[BaseModel], what: str):
    """A spec file (sweep or ablation) with ``--set`` overrides, validated, and its base run config."""
    path = Path(path)
    raw = apply_overrides(read_yaml(path, what), absolute_path_overrides(overrides, Path.cwd()))
    _spec_paths_absolute(raw, path.resolve().parent)
    try:
        spec = model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path), {parse_override(t)[0] for t in overrides})) from None
    return spec, load_base(spec, path.resolve().parent)


def load_sweep_spec(path: str | Path, overrides: list[str] = ()) -> tuple[SweepSpec, RunConfig]:
    """Read and check a sweep spec: the spec itself, its base config and its space."""
    spec, base = read_spec(path, overrides, SweepSpec, "sweep spec")
    _check_space(spec, base)
    return spec, base
