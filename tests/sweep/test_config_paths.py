"""Relative data paths: against the config file's folder when written there, against the working
directory from --set; a missing list names what it was resolved against."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hybridlt.data.image_list import ImageListError, load_image_lists
from hybridlt.sweep.ablate import load_ablation_spec
from hybridlt.sweep.config import load_run_config


def test_file_paths_resolve_against_the_file_and_set_paths_against_the_working_directory(tmp_path, monkeypatch):
    sub = tmp_path / "exp" / "configs"
    sub.mkdir(parents=True)
    cfg_file = sub / "run.yaml"
    cfg_file.write_text("data:\n  dataset: image_list\n  root: ../imgs\n  train_list: lists/train.txt\n"
                        "  val_list: /abs/val.txt\n  class_names: names.txt\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_run_config(cfg_file)
    assert cfg.data.root == str(tmp_path / "exp" / "imgs")
    assert cfg.data.train_list == str(sub / "lists" / "train.txt")
    assert cfg.data.val_list == "/abs/val.txt" and cfg.data.class_names == str(sub / "names.txt")
    over = load_run_config(cfg_file, ["data.root=here", "data.cache_dir=/abs/c", "data.class_names=null"])
    # from --set: the working directory's, made absolute now (a run records the folder it trained on)
    assert (over.data.root, over.data.cache_dir, over.data.class_names) == (str(tmp_path / "here"), "/abs/c", None)
    assert load_run_config(cfg_file, ["data.root=s3://b/imgs"]).data.root == "s3://b/imgs"
    assert load_run_config(cfg_file, resolve_paths=False).data.root == "../imgs"


def _spec_elsewhere(tmp_path, monkeypatch, text: str):
    """``text`` as ``tmp_path/specs/s.yaml``, read from another working folder (``tmp_path/work``)."""
    (tmp_path / "specs").mkdir()
    spec = tmp_path / "specs" / "s.yaml"
    spec.write_text(text)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return spec, work


def test_spec_override_lists_resolve_against_the_spec_and_set_against_the_working_directory(tmp_path, monkeypatch):
    """A trial applies the spec's overrides and variants in Ray's working folder: made absolute when read."""
    spec, work = _spec_elsewhere(tmp_path, monkeypatch,
                                 "name: t\nbase:\n  data: {root: inline}\noverrides: ['data.root=../imgs', 'seed=1']\n"
                                 "variants:\n  a: ['data.train_list=lists/a.txt']\n  b: []\n")
    ab, base = load_ablation_spec(spec)
    assert base.data.root == str(tmp_path / "imgs") and base.seed == 1
    assert ab.overrides == [f'data.root="{tmp_path / "imgs"}"', "seed=1"]
    assert ab.variants["a"] == [f'data.train_list="{tmp_path / "specs" / "lists" / "a.txt"}"']
    _, base = load_ablation_spec(spec, ["base.data.root=mine", "overrides=['data.cache_dir=c']"])
    assert base.data.root == str(work / "mine") and base.data.cache_dir == str(work / "c")
    # a whole section given as a value: its data paths are the working folder's too
    ab, base = load_ablation_spec(spec, ["base.data={root: sec, cache_dir: cc, train_list: /abs/t.txt}",
                                         "variants={a: ['data.val_list=v.txt'], b: []}"])
    # (the spec's own overrides still set data.root after the base: against the spec's folder)
    assert base.data.cache_dir == str(work / "cc") and base.data.train_list == "/abs/t.txt"
    assert base.data.root == str(tmp_path / "imgs")
    assert ab.variants == {"a": [f'data.val_list="{work / "v.txt"}"'], "b": []}
    assert load_run_config(None, ["data={dataset: image_folder, root: pics}"]).data.root == str(work / "pics")


def test_a_run_directory_records_a_set_path_absolute(tmp_path, monkeypatch):
    """``--set data.root=rel`` from one folder, ``--resume`` from another: the same data, or a clear refusal."""
    from hybridlt.sweep.run import prepare_run_dir

    monkeypatch.chdir(tmp_path)
    cfg = load_run_config(None, ["data.root=my images"])
    prepare_run_dir(tmp_path / "run", cfg, resume=False)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["root"] == str(tmp_path / "my images")


def test_a_spec_base_resolves_against_its_own_folder(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "b.yaml").write_text("data:\n  root: imgs\n")
    (tmp_path / "specs").mkdir()
    spec = tmp_path / "specs" / "s.yaml"
    spec.write_text("name: t\nbase: ../base/b.yaml\nvariants:\n  a: []\n")
    assert load_ablation_spec(spec)[1].data.root == str(tmp_path / "base" / "imgs")
    spec.write_text("name: t\nbase:\n  data: {root: imgs}\nvariants:\n  a: []\n")  # inline: the spec's folder
    assert load_ablation_spec(spec)[1].data.root == str(tmp_path / "specs" / "imgs")


def test_missing_list_says_against_what(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    want = f"train.txt: file not found \\(relative to the working directory {tmp_path}"
    with pytest.raises(ImageListError, match=want):
        load_image_lists("train.txt", "val.txt", tmp_path)


def test_text_lists_take_a_class_names_file(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "t.txt").write_text("a.png 0\na.png 1\n")
    (tmp_path / "names.txt").write_text("# one a line\ncat\ndog\n")
    data = load_image_lists(tmp_path / "t.txt", tmp_path / "t.txt", tmp_path, check_files=False,
                            class_names=tmp_path / "names.txt")
    assert data.class_names == ["cat", "dog"]
    (tmp_path / "short.txt").write_text("cat\n")
    with pytest.raises(ImageListError, match="1 names for 2 classes"):
        load_image_lists(tmp_path / "t.txt", tmp_path / "t.txt", tmp_path, check_files=False,
                         class_names=tmp_path / "short.txt")


def test_presets_ship_download_false_and_resolve_data_next_to_the_repository():
    configs = Path(__file__).resolve().parents[2] / "configs"
    for name in ("cifar10_lt", "cifar10_lt_psc", "cifar100_lt", "cifar100_lt_psc"):
        cfg = load_run_config(configs / f"{name}.yaml")
        assert cfg.data.download is False and cfg.data.root == str(configs.parent / "data_cache")
    psc = load_run_config(configs / "inat2018_psc.yaml")
    assert (psc.loss.contrastive, psc.model.backbone, psc.curriculum.power, psc.train.epochs) == ("psc", "resnet50",
                                                                                                 1.0, 100)
    assert psc.data.train_list == str(configs.parent / "data_cache" / "inat2018" / "train2018.json")


def test_a_searched_data_path_resolves_like_the_rest(tmp_path, monkeypatch):
    """``space: {data.root: {grid: [a, b]}}``: each value against the spec's folder (a trial draws it
    in Ray's working folder)."""
    from hybridlt.sweep.spec import load_sweep_spec

    spec, _ = _spec_elsewhere(tmp_path, monkeypatch,
                              "name: t\nbase:\n  data: {dataset: digits_lt}\nsearch: {algorithm: grid}\n"
                              "space:\n  data.root: {grid: [imgs_a, /abs/b, 's3://x/c']}\n"
                              "  data.cache_dir: {choice: [c1]}\n")
    sweep, _ = load_sweep_spec(spec)
    assert sweep.space["data.root"].grid == [str(tmp_path / "specs" / "imgs_a"), "/abs/b", "s3://x/c"]
    assert sweep.space["data.cache_dir"].choice == [str(tmp_path / "specs" / "c1")]


def test_set_values_read_back_unchanged_when_a_path_is_made_absolute(tmp_path):
    """Making ``--set`` paths absolute rewrites the override's text; what it does not touch reads back
    as written: a NaN stays a float NaN (JSON wrote it as ``NaN``, which YAML reads as a string, so the
    error said 'valid number' instead of 'finite number'), strings that look like other YAML stay strings."""
    import math

    from hybridlt.sweep.config import absolute_path_overrides, parse_override

    texts = ["optim.lr=.nan", "data={root: imgs, imbalance_ratio: .nan, dataset: 'yes'}",
             "variants.a=[data.root=imgs, loss.temperature=.inf]", "data.root='1.5'", "data.root=/abs"]
    out = [parse_override(t) for t in absolute_path_overrides(texts, tmp_path)]
    assert out[0][0] == "optim.lr" and math.isnan(out[0][1])
    key, data = out[1]
    assert key == "data" and list(data) == ["root", "imbalance_ratio", "dataset"]
    assert data["root"] == str(tmp_path / "imgs") and math.isnan(data["imbalance_ratio"]) and data["dataset"] == "yes"
    assert out[2] == ("variants.a", [f'data.root="{tmp_path / "imgs"}"', "loss.temperature=.inf"])
    assert out[3] == ("data.root", str(tmp_path / "1.5")) and out[4] == ("data.root", "/abs")
    unchanged = ["optim.lr=.nan", "data={dataset: digits_lt}", "variants.a=[loss.temperature=0.1]"]
    assert absolute_path_overrides(unchanged, tmp_path) == unchanged
