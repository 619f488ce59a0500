"""Run configs: presets load, overrides apply, and every bad value is named with what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hybridlt.sweep.config import ConfigError, RunConfig, load_run_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


PRESETS = ["quickstart", "cifar10_lt", "cifar10_lt_psc", "cifar100_lt", "cifar100_lt_psc", "inat2018"]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_validate(name):
    cfg = load_run_config(CONFIGS / f"{name}.yaml")
    assert isinstance(cfg, RunConfig)


def test_paper_settings_in_cifar_presets():
    cfg = load_run_config(CONFIGS / "cifar100_lt.yaml")
    assert (cfg.model.backbone, cfg.train.epochs, cfg.train.batch_size) == ("resnet32", 200, 512)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.milestones) == (0.5, 0.9, 1e-4,
                                                                                                 [120, 160])
    assert (cfg.curriculum.kind, cfg.curriculum.power) == ("power", 2.0)
    inat = load_run_config(CONFIGS / "inat2018.yaml")
    assert (inat.model.backbone, inat.train.epochs, inat.train.batch_size, inat.curriculum.power) == (
        "resnet50", 100, 100, 1.0)


def test_overrides_parse_yaml_values():
    cfg = load_run_config(None, ["loss.temperature=0.5", "train.amp=false", "optim.milestones=[3, 5]",
                                 "loss.contrastive=mpsc"])
    assert cfg.loss.temperature == 0.5 and cfg.train.amp is False and cfg.optim.milestones == [3, 5]


def test_resolved_config_round_trips():
    cfg = load_run_config(CONFIGS / "quickstart.yaml", ["seed=7"])
    assert RunConfig.model_validate(yaml.safe_load(cfg.to_yaml())) == cfg


BAD = [
    (["loss.temperature=0"], "loss.temperature", "greater than 0"),
    (["loss.temperature=-1"], "loss.temperature", "(value -1)"),
    (["loss.tau=0.1"], "loss.tau", "unknown key"),
    (["lossy.temperature=0.1"], "lossy", "unknown key"),
    (["loss.contrastive=simclr"], "loss.contrastive", "allowed: 'sc', 'mpsc', 'psc' or 'ce'"),
    (["loss.classifier=hinge"], "loss.classifier", "allowed"),
    (["loss.prototypes_per_class=0"], "loss.prototypes_per_class", "greater than or equal to 1"),
    (["model.backbone=vgg16"], "model.backbone", "resnet32"),
    (["train.epochs=0"], "train.epochs", "greater than or equal to 1"),
    (["train.epochs=ten"], "train.epochs", "valid integer"),
    (["train.batch_size=1"], "train.batch_size", "greater than or equal to 2"),
    (["train.device=tpu"], "train.device", "'auto', 'cpu' or 'cuda'"),
    (["optim.lr=0"], "optim.lr", "greater than 0"),
    (["optim.momentum=1"], "optim.momentum", "less than 1"),
    (["optim.schedule=poly"], "optim.schedule", "'multistep', 'cosine' or 'constant'"),
    (["optim.milestones=[160, 120]"], "optim.milestones", "strictly increasing"),
    (["optim.warmup_epochs=300"], "optim.warmup_epochs", "must be < train.epochs"),
    (["curriculum.kind=sigmoid"], "curriculum.kind", "'power', 'cosine'"),
    (["curriculum.power=0"], "curriculum.power", "greater than 0"),
    (["curriculum.switch=1.5"], "curriculum.switch", "less than or equal to 1"),
    (["sampler.contrastive=weighted"], "sampler.contrastive", "'random', 'class_balanced'"),
    (["sampler.positives=0"], "sampler.positives", "greater than or equal to 1"),
    (["augment.grayscale_p=2"], "augment.grayscale_p", "less than or equal to 1"),
    (["augment.jitter=[0.4, 0.4, 0.4, 0.9]"], "augment.jitter.3", "less than or equal to 0.5"),
    (["data.dataset=imagenet"], "data.dataset", "'digits_lt'"),
    (["data.imbalance_ratio=0.5"], "data.imbalance_ratio", "greater than or equal to 1"),
    (["data.profile=linear"], "data.profile", "'exp' or 'step'"),
    (["data.dataset=inat2018"], "data.train_list", "required"),
    (["data.few_below=50", "data.many_above=10"], "data.few_below", "many_above"),
    (["name=my run"], "name", "pattern"),
    (["train=5"], "train", "valid dictionary"),
]


@pytest.mark.parametrize("overrides, field, allowed", BAD, ids=[b[1] + ":" + b[0][0] for b in BAD])
def test_bad_values_name_field_and_allowed(overrides, field, allowed):
    with pytest.raises(ConfigError) as info:
        load_run_config(None, overrides)
    message = str(info.value)
    assert f"{field}:" in message or f"{field} " in message
    assert allowed in message


@pytest.mark.parametrize("override, expected", [
    ("loss.temperature", "not of the form"),
    ("=3", "not of the form"),
    ("loss..temperature=1", "not of the form"),
    ("loss.temperature.x=1", "is a value, not a section"),
    ("loss.temperature=[1", "not valid YAML"),
])
def test_malformed_overrides(override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_run_config(CONFIGS / "quickstart.yaml", [override])


@pytest.mark.parametrize("text, expected", [
    ("- a\n- b\n", "top level must be a mapping"),
    ("loss: {temperature: [\n", "not valid YAML"),
    ("loss:\n  temperature: 0.1\n  extra: 1\n", "loss.extra: unknown key"),
])
def test_bad_files(tmp_path, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_run_config(path)
    assert str(path) in str(info.value)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_run_config(tmp_path / "nope.yaml")
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ConfigError, match=r"b.yaml: not a text file \(it holds NUL bytes\); allowed: a UTF-8 YAML"):
        load_run_config(binary)


def _leaf_paths(model, prefix=""):
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and hasattr(field.annotation, "model_fields"):
            yield from _leaf_paths(field.annotation, f"{prefix}{name}.")
        else:
            yield prefix + name


def test_readme_documents_every_config_key():
    readme = (CONFIGS.parent / "README.md").read_text()
    missing = [p for p in _leaf_paths(RunConfig) if f"`{p}`" not in readme]
    assert not missing, f"README config reference lacks {missing}"
