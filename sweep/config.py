"""Run configs: pydantic models, one YAML file per run, ``--set a.b=value`` overrides.

Unknown keys and bad values are rejected with the field's dotted path, the value given and
what is allowed (``ConfigError``). Field names match the keyword arguments of the builders in
``model/`` and ``data/``.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator
from pydantic import Strict as _Strict

from hybridlt.data.dataset import DATASETS, required_fields
from hybridlt.data.long_tail import PROFILES
from hybridlt.data.samplers import SAMPLERS
from hybridlt.errors import InputError
from hybridlt.model.backbones import BACKBONES
from hybridlt.model.curriculum import CURRICULA
from hybridlt.model.hybrid import CLASSIFIERS
from hybridlt.model.losses import CLASSIFIER_LOSSES, CONTRASTIVE_LOSSES
from hybridlt.model.optim import SCHEDULES

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
# Seeds feed numpy and torch generators (both take 0 .. 2^32-1 everywhere); names become folder names.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]
# Strict types: a bool is not taken for 1, 2.7 is not truncated to a count, "0.1" is not a number;
# floats must be finite (allow_inf_nan=False on every section).
Int = Annotated[int, _Strict()]
Float = Annotated[float, _Strict()]
Bool = StrictBool
MAX_SEED = 2**32 - 1
MAX_YAML_BYTES = 1 << 20  # config and spec files: 1 MiB
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MAX_NAME = 100  # run, sweep and variant names become folder names

# The allowed names of every choice come from its registry (the registries live beside the implementations).
def _choice(registry):
    return Literal[registry.names()]  # type: ignore[valid-type]


Sampler = _choice(SAMPLERS)


class ConfigError(InputError):
    """A config that cannot run; ``str()`` is one or more lines naming field, value and what is allowed."""


def _types(annotation) -> set:
    """The plain types an annotation admits (``int | None`` -> {int, NoneType}; Literal values' types)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return {type(a) for a in args}
    if not args:
        return {annotation}
    if typing.get_origin(annotation) is typing.Annotated:
        return _types(args[0])
    return set().union(*(_types(a) for a in args))


def no_bool_confusion(cls, value, info):
    """``true`` is not a number and ``1`` is not a boolean (pydantic's lax mode takes both)."""
    types = _types(cls.model_fields[info.field_name].annotation)
    if isinstance(value, bool) and bool not in types and types & {int, float}:
        raise ValueError("a number is expected, not a boolean")
    if bool in types and value is not None and not isinstance(value, bool) and not types & {int, float, str}:
        raise ValueError("true or false is expected")
    return value


class Section(BaseModel):
    # Finite floats only: inf and nan pass every bound check and then train nonsense.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    _no_bool_confusion = field_validator("*", mode="before")(classmethod(no_bool_confusion))


class DataConfig(Section):
    dataset: _choice(DATASETS) = "digits_lt"
    root: str = Field("data_cache", description="relative: against the config file's folder (--set: the "
                      "working directory)")
    download: Bool = False
    imbalance_ratio: Float = Field(100.0, ge=1.0)
    profile: _choice(PROFILES) = "exp"
    max_count: int | None = Field(None, ge=1, description="images of the largest class (default: all)")
    test_per_class: int | None = Field(None, ge=1, description="digits_lt: balanced test images per class "
                                       "(default 50); image_folder: at most this many test images a class, "
                                       "a seeded pick (default: all)")
    seed: Seed = Field(0, description="seed of the long-tailed subsampling, fixed across run seeds")
    train_list: str | None = Field(None, description="image lists: iNaturalist JSON or 'path label' text")
    val_list: str | None = None
    class_names: str | None = Field(None, description="text lists: a file of class names, line i = class i")
    image_size: Int = Field(224, ge=8, le=2048)
    max_image_pixels: Int = Field(40_000_000, ge=1, description="image lists: refuse an image whose header "
                                  "claims more pixels (width x height) than this, before decoding it")
    loader_workers: Int | None = Field(None, ge=0, le=256, description="default: the CPUs this trial has")
    memory_max_size: Int = Field(64, ge=0, description="image_folder: decode into memory when every side is at "
                                 "most this (0: never)")
    cache_dir: str | None = Field(None, description="image_folder: where the decoded cache lives (default: "
                                  "$HYBRIDLT_CACHE or ~/.cache/hybridlt)")
    many_above: Int = Field(100, ge=0, description="many-shot: more than this many training images")
    few_below: Int = Field(20, ge=1, description="few-shot: fewer than this many training images")

    @model_validator(mode="after")
    def _check(self):
        missing = [f"data.{name}" for name in required_fields(self.dataset) if getattr(self, name, None) is None]
        if missing:
            raise ValueError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required for "
                             f"dataset {self.dataset!r}")
        if self.few_below > self.many_above + 1:
            raise ValueError(f"data.few_below: {self.few_below} must be <= data.many_above + 1 "
                             f"({self.many_above + 1})")
        return self


class SamplerConfig(Section):
    contrastive: Sampler = "random"
    classifier: Sampler = "class_balanced"
    positives: Int = Field(2, ge=1, description="positives sampler: same-class samples per anchor")


class AugmentConfig(Section):
    crop_padding: Int = Field(4, ge=0, le=64)
    flip: Bool = True
    grayscale_p: Fraction = 0.2
    jitter: tuple[Annotated[float, _Strict(), Field(ge=0)], Annotated[float, _Strict(), Field(ge=0)],
                  Annotated[float, _Strict(), Field(ge=0)],
                  Annotated[float, _Strict(), Field(ge=0, le=0.5)]] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: Fraction = 0.8


class ModelConfig(Section):
    backbone: _choice(BACKBONES) = "resnet32"
    proj_dim: Int = Field(128, ge=1, le=65536)
    proj_hidden: Int | None = Field(None, ge=1, le=65536, description="default: the backbone's feature width")
    classifier: _choice(CLASSIFIERS) | None = Field(
        None, description="default: cosine for ldam/ldam_drw, linear otherwise")
    bn_streams: Literal["joint", "separate"] = Field(
        "joint", description="joint: one backbone forward over both streams; separate: one per stream")


class LossConfig(Section):
    contrastive: _choice(CONTRASTIVE_LOSSES) = "sc"
    classifier: _choice(CLASSIFIER_LOSSES) = "ce"
    temperature: Float = Field(0.1, gt=0.0)
    prototypes_per_class: Int = Field(1, ge=1, le=1024, description="mpsc only")
    prototype_init: Literal["normal", "unit"] = Field(
        "normal", description="psc, mpsc: raw N(0, 1) prototypes (normalised where used) or unit-norm ones")
    focal_gamma: Float = Field(1.0, ge=0.0, description="focal, cb_focal, cb_softmax_focal: gamma")
    cb_beta: Float = Field(0.9999, ge=0.0, lt=1.0, description="cb_ce, cb_focal, ldam_drw: effective-number beta")
    drw_start: Float = Field(0.8, ge=0.0, le=1.0, description="ldam_drw: fraction of epochs before re-weighting")
    ldam_max_margin: Float = Field(0.5, gt=0.0, description="ldam: margin of the smallest class")
    ldam_scale: Float = Field(30.0, gt=0.0, description="ldam: logit scale s")
    la_tau: Float = Field(1.0, ge=0.0, description="logit_adjust: tau (1 = balanced softmax)")


class CurriculumConfig(Section):
    kind: _choice(CURRICULA) = "power"
    power: Float = Field(2.0, gt=0.0, description="power: alpha = 1 - (t/T)^power")
    value: Fraction = Field(0.5, description="constant: alpha")
    switch: Fraction = Field(0.5, description="step, two_stage: fraction of epochs before the switch")
    low: Fraction = Field(0.0, description="step: alpha after the switch")


class OptimConfig(Section):
    lr: Float = Field(0.5, gt=0.0)
    momentum: Float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: Float = Field(1e-4, ge=0.0)
    nesterov: Bool = False
    schedule: _choice(SCHEDULES) = "multistep"
    warmup_epochs: Float = Field(0.0, ge=0.0)
    milestones: list[Annotated[int, _Strict(), Field(ge=1)]] = [120, 160]
    gamma: Float = Field(0.1, gt=0.0, le=1.0)

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, v):
        if any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError(f"milestones must be strictly increasing epochs, got {v}")
        return v


class TrainConfig(Section):
    epochs: Int = Field(200, ge=1, le=100_000)
    batch_size: Int = Field(512, ge=2, le=1 << 20, description="per step and stream, summed over workers")
    eval_batch_size: Int = Field(1024, ge=1, le=1 << 20)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Bool = Field(True, description="bf16 autocast on CUDA")
    channels_last: Bool = Field(True, description="channels_last memory format on CUDA")
    compile: Bool | Literal["default", "reduce-overhead", "max-autotune"] = Field(
        False, description="torch.compile the objective; 'reduce-overhead' captures its step in CUDA graphs")
    checkpoint_every: Int = Field(1, ge=1)
    eval_every: Int = Field(1, ge=1, description="epochs between evaluations (the last epoch and "
                                                  "every scheduler rung always)")
    keep_checkpoints: Int = Field(2, ge=1)
    threads: Int | None = Field(None, ge=1, le=4096, description=(
        "intra-op CPU threads (torch.set_num_threads); null: a sweep trial uses the CPUs it holds and "
        "records that number, a train run torch's default. Float sums differ between thread counts"))

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_mode(cls, v):  # one message, not one per member of the union
        modes = ("default", "reduce-overhead", "max-autotune")
        if not isinstance(v, bool) and v not in modes:
            raise ValueError(f"unknown value {v!r}; allowed: false, true, {', '.join(map(repr, modes))}")
        return v


class RunConfig(Section):
    name: Name = "run"
    seed: Seed = 0
    data: DataConfig = DataConfig()
    sampler: SamplerConfig = SamplerConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    curriculum: CurriculumConfig = CurriculumConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _warmup_fits(self):
        if self.optim.warmup_epochs >= self.train.epochs:
            raise ValueError(f"optim.warmup_epochs: {self.optim.warmup_epochs} must be < "
                             f"train.epochs ({self.train.epochs})")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def format_validation_error(exc: ValidationError, source: str = "config", overridden=frozenset()) -> str:
    """One line per error, each naming where the value came from: ``source``, or ``--set`` for the keys
    in ``overridden`` (those the command line set)."""
    lines = []
    file_source = source
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        # a key the command line set, or one inside a section it set (--set 'train={epochs: 0}')
        source = "--set" if any(path == k or path.startswith(f"{k}.") for k in overridden) else file_source
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: {path}: unknown key (value {err['input']!r}); see the README's config reference")
        elif err["type"] == "missing":
            lines.append(f"{source}: {path}: required")
        elif err["type"] == "literal_error":  # a name that is not in its registry
            lines.append(f"{source}: {path}: unknown value {err['input']!r}; allowed: {err['ctx']['expected']}")
        else:
            where = f"{path}: " if path else ""
            lines.append(f"{source}: {where}{msg} (value {err['input']!r})"
                         if not isinstance(err["input"], dict) else f"{source}: {where}{msg}")
    return "\n".join(lines)


MISSING = object()


def get_path(raw: dict, path: str, default=MISSING):
    """The value at dotted ``path`` (``loss.temperature``) of a nested mapping, or ``default``."""
    node = raw
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def set_path(raw: dict, path: str, value, create: bool = False) -> None:
    """Set dotted ``path`` of a nested mapping; ``create`` makes missing sections (``--set``)."""
    *parents, last = path.split(".")
    node = raw
    for i, part in enumerate(parents):
        child = node.setdefault(part, {}) if create else node[part]
        if not isinstance(child, dict):
            raise ConfigError(f"--set {path}: {'.'.join(parents[:i + 1])!r} is a value, not a section")
        node = child
    node[last] = value


def parse_override(text: str) -> tuple[str, object]:
    """``a.b=value`` -> ('a.b', value parsed as YAML, so 0.1 is a float and true a bool)."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set: {text!r} is not of the form section.key=value")
    if len(raw) > 10_000:
        raise ConfigError(f"--set {key}: value of {len(raw)} characters; allowed: at most 10000")
    value = parse_yaml_text(raw, f"--set {key}: value {raw!r}") if raw else ""
    return key, value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides:
        set_path(raw, *parse_override(text), create=True)
    return raw


MAX_YAML_BYTES = 1 << 20  # a run config or spec is a few KB; anything near this is not one


class _BoundedLoader(yaml.SafeLoader):
    """Safe YAML without its two traps for a config: an alias (``*a``) is refused, since a few of them
    expand a small file into gigabytes, and a key given twice is refused instead of the last one winning."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, f"alias *{event.anchor} is not allowed (anchors and aliases are refused; "
                            f"write the value out)", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: let PyYAML say so
                break
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first on line {first.start_mark.line + 1}); "
                                f"allowed: each key once", key_node.start_mark)
        return super().construct_mapping(node, deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: ``line L, column C: problem`` (PyYAML's own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{f'{context}: ' if context else ''}{problem}".replace("\n", " ")


def parse_yaml(text: str, source: str):
    """YAML text as Python values through the bounded loader; errors become one ``ConfigError`` line."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({_yaml_problem(exc)})") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML (nested too deeply; allowed: a few levels of sections)") from None


def decode_text(data: bytes, source: str) -> str:
    """UTF-8 text (a byte-order mark is accepted and dropped); a bad byte is named by line and column."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(f"{source}: line {line}, column {column}: byte 0x{data[exc.start]:02x} is not UTF-8 "
                          f"({exc.reason}); allowed: UTF-8 text") from None


def read_yaml(path: str | Path, what: str = "config") -> dict:
    """A config or spec file as a dict: at most ``MAX_YAML_BYTES``, UTF-8, no aliases, no repeated keys."""
    path = Path(path)
    shown = f"{what} {path}" + ("" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})")
    if path.is_dir():
        raise ConfigError(f"{shown}: is a folder; allowed: a YAML file")
    if not path.is_file():
        raise ConfigError(f"{shown}: file not found")
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(f"{what} {path}: {size} bytes; allowed: at most {MAX_YAML_BYTES} bytes (1 MiB)")
        data = path.read_bytes()
    except PermissionError:
        raise ConfigError(f"{what} {path}: not readable (permission denied)") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot be read ({exc.strerror})") from None
    if b"\0" in data[:8192]:
        raise ConfigError(f"{what} {path}: not a text file (it holds NUL bytes); allowed: a UTF-8 YAML file")
    raw = parse_yaml(decode_text(data, f"{what} {path}"), f"{what} {path}")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path}: top level must be a mapping of sections, got {type(raw).__name__}")
    bad = [k for k in raw if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{what} {path}: key {bad[0]!r} is a {type(bad[0]).__name__}; allowed: names (text)")
    return raw


_StrictLoader = _BoundedLoader
parse_yaml_text = parse_yaml  # the name other readers use


def validate_run_config(raw: dict, source: str = "config", overridden=frozenset()) -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, overridden)) from None


DATA_PATH_FIELDS = ("root", "train_list", "val_list", "class_names", "cache_dir")


def _relative_path(value) -> bool:
    return (isinstance(value, str) and bool(value) and "://" not in value and not value.startswith("~")
            and not Path(value).is_absolute())


def absolute_path(value, folder: Path):
    """``value`` made absolute against ``folder`` when it is a relative path (a URL, ``~``, an absolute
    path, an empty string or a non-string is returned as it is)."""
    return str((folder / value).resolve()) if _relative_path(value) else value


def is_data_path(key: str) -> bool:
    """Whether a dotted key names a data path field (``data.root``, ``base.data.train_list``, ...)."""
    parts = key.split(".")
    return len(parts) >= 2 and parts[-2] == "data" and parts[-1] in DATA_PATH_FIELDS


def absolute_path_overrides(overrides, folder: Path) -> list[str]:
    """``key=value`` overrides whose relative data path (``data.root``, ``data.train_list``, ...; also in
    an override list given as a value: ``overrides=[...]``, ``variants.<name>=[...]``) is made
    absolute against ``folder``, the folder the text was written for: the working directory for
    ``--set``, a spec's folder for the overrides written in it. Others are returned unchanged."""
    out = []
    for text in overrides:
        key, value = parse_override(text)
        absolute = _absolute_value(key, value, folder)
        if absolute is not value:  # not `!=`: a NaN differs from itself, and was rewritten as 'NaN' text
            text = f"{key}={_flow_yaml(absolute)}"
        out.append(text)
    return out


def _flow_yaml(value) -> str:
    """``value`` as one line that reads back as the same value: JSON (YAML reads it; the form sweeps
    record), or YAML flow where it holds a non-finite float, which JSON writes as ``NaN``, a string to
    YAML."""
    import json

    try:
        return json.dumps(value, default=str, allow_nan=False)
    except ValueError:
        text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1 << 30, allow_unicode=True)
        return text.removesuffix("\n").removesuffix("\n...").strip()


def _absolute_value(key: str, value, folder: Path):
    """``value`` set at ``key`` with its relative data paths made absolute against ``folder``: the
    value itself, an override list's items, or what a whole section holds (``data={root: imgs}``,
    ``variants={a: [data.root=imgs]}``)."""
    parts = key.split(".")
    if is_data_path(key) and _relative_path(value):
        return absolute_path(value, folder)
    if (parts[-1] == "overrides" or "variants" in parts) and override_list(value):
        items = absolute_path_overrides(value, folder)
        return value if items == value else items
    if isinstance(value, dict):  # the same object back when nothing in it changed
        items = {k: _absolute_value(f"{key}.{k}", v, folder) for k, v in value.items()}
        return value if all(items[k] is value[k] for k in value) else items
    return value


def override_list(value) -> bool:
    """Whether ``value`` is a list of ``key=value`` override strings."""
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def resolve_data_paths(raw: dict, folder: Path) -> dict:
    """Relative ``data.root``/``train_list``/``val_list``/``class_names``/``cache_dir`` of ``raw`` made
    absolute against ``folder``: the folder of the config file they are written in (those of ``--set``:
    ``absolute_path_overrides``; of a Python dict: the working directory)."""
    data = raw.get("data")
    if isinstance(data, dict):
        for key in DATA_PATH_FIELDS:
            value = data.get(key)
            if _relative_path(value):
                data[key] = absolute_path(value, folder)
    return raw


def load_run_config(path: str | Path | None, overrides: list[str] = (), resolve_paths: bool = True) -> RunConfig:
    """A run config from a YAML file (or the defaults when ``path`` is None) plus ``--set`` overrides.

    Data paths in the file resolve against its folder (``resolve_paths=False``: left as written, for
    the config a run directory records, which was resolved when the run started), those of
    ``overrides`` against the working directory."""
    raw = read_yaml(path) if path else {}
    if "base" in raw and ({"space", "variants"} & set(raw)):  # one line, not one per unknown key
        kind, key, verb = ("a sweep", "space", "sweep") if "space" in raw else ("an ablation", "variants", "ablate")
        raise ConfigError(f"{path}: {kind} spec (it has base: and {key}:), not a run config; run it with "
                          f"'hybridlt {verb} {path}'")
    if path and resolve_paths:
        raw = resolve_data_paths(raw, Path(path).resolve().parent)
    raw = apply_overrides(raw, absolute_path_overrides(overrides, Path.cwd()))
    return validate_run_config(raw, str(path or "config"), {parse_override(text)[0] for text in overrides})
