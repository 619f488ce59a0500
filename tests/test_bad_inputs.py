"""The bad-input catalogue: every case is answered by one line on stderr that names the field or
file, the value and what is allowed; exit code 2; no traceback; nothing already written changes.

Each case builds what it needs under ``tmp_path`` and returns the argv of one ``hybridlt`` call.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from torchvision.io import write_png

from hybridlt.cli import main
from hybridlt.sweep.results import ResultsWriter, trials_schema
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "quickstart.yaml")
SWEEP = ROOT / "configs" / "sweeps" / "quickstart.yaml"
ABLATION = ROOT / "configs" / "ablations" / "digits_table4.yaml"


def sets(*overrides):
    return [a for s in overrides for a in ("--set", s)]


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def run_config(tmp, **sections) -> str:
    doc = yaml.safe_load(Path(QUICK).read_text())
    for key, value in sections.items():
        doc.setdefault(key, {}).update(value) if isinstance(value, dict) else doc.__setitem__(key, value)
    return write(tmp / "cfg.yaml", yaml.safe_dump(doc))


def sweep_spec(tmp, **changes) -> str:
    doc = yaml.safe_load(SWEEP.read_text())
    doc["base"], doc["storage"] = QUICK, str(tmp / "sweeps")
    doc.update(changes)
    return write(tmp / "sweep.yaml", yaml.safe_dump(doc))


def ablation_spec(tmp, **changes) -> str:
    doc = yaml.safe_load(ABLATION.read_text())
    doc["base"], doc["storage"] = QUICK, str(tmp / "abl")
    doc.update(changes)
    return write(tmp / "abl.yaml", yaml.safe_dump(doc))


def store(tmp, name="s") -> Path:
    """A small results store with one finished trial, as a sweep writes it."""
    root = tmp / name / "results"
    writer = ResultsWriter(root)
    writer.sweep_yaml({"objective": {"metric": "acc", "mode": "max"}}, {}, {})
    cfg = yaml.safe_dump(yaml.safe_load(Path(QUICK).read_text()))
    writer.trial({"trial_id": "t1", "status": "completed", "final_acc": 0.9, "epochs_done": 1, "config_yaml": cfg},
                 trials_schema({}))
    return tmp / name


def finished_run(tmp) -> Path:
    assert main(["train", "--config", QUICK, *sets(*TINY, "train.epochs=1"), "--out", str(tmp / "run"),
                 "--quiet"]) == 0
    return tmp / "run"


def image_list(tmp, train_lines=None, val_lines=None, text_file=False, workers=0) -> list[str]:
    for i, label in enumerate((0, 0, 1, 1)):
        path = tmp / "img" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_png(torch.full((3, 8, 8), 40 * label, dtype=torch.uint8), str(path))
    if text_file:
        (tmp / "img" / "3.png").write_text("not an image")
    train = write(tmp / "train.txt", "".join(train_lines or ["img/0.png 0\n", "img/1.png 0\n", "img/2.png 1\n",
                                                             "img/3.png 1\n"]))
    val = write(tmp / "val.txt", "".join(val_lines or ["img/0.png 0\n", "img/2.png 1\n"]))
    return ["--config", QUICK, *sets("data.dataset=image_list", f"data.root={tmp}", f"data.train_list={train}",
                                     f"data.val_list={val}", "data.image_size=8", f"data.loader_workers={workers}",
                                     "train.epochs=1", "train.batch_size=4", "optim.warmup_epochs=0")]


class Payload:
    """A pickle that, loaded by plain ``pickle.load``, runs a shell command writing a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def cifar(tmp, corrupt=False, batch3=None, meta=None) -> list[str]:
    folder = tmp / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": np.zeros((10, 3072), np.uint8), "labels": list(range(10))}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta if meta is not None else {"label_names": [str(i) for i in range(10)]}, f)
    if corrupt:
        (folder / "data_batch_3").write_bytes(b"\x80\x04garbage")
    elif batch3 is not None:
        with open(folder / "data_batch_3", "wb") as f:
            pickle.dump(batch3, f)
    elif meta is None:
        (folder / "test_batch").unlink()
    return ["data", "stats", "--config", QUICK, *sets("data.dataset=cifar10_lt", f"data.root={tmp / 'cifar'}")]


class _Payload:
    """A pickle that, loaded by plain ``pickle.load``, writes a marker file: code execution."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def cifar_payload(tmp) -> list[str]:
    argv = cifar(tmp)
    folder = tmp / "cifar" / "cifar-10-batches-py"
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": [[0] * 3072] * 2, "labels": [0, 1]}, f)
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({"data": _Payload(tmp / "PWNED"), "labels": [0, 1]}, f)
    return argv


def cifar_batch(tmp, entry) -> list[str]:
    """A CIFAR folder whose first training batch holds ``entry`` (everything else well-formed)."""
    argv = cifar(tmp)
    folder = tmp / "cifar" / "cifar-10-batches-py"
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": [[0] * 3072] * 2, "labels": [0, 1]}, f)
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump(entry, f)
    return argv


def raw_config(tmp, text: str, name="raw.yaml", data: bytes | None = None) -> list[str]:
    path = tmp / name
    path.write_bytes(data if data is not None else text.encode())
    return ["train", "--config", str(path), "--out", str(tmp / "r")]


def newer_store(tmp) -> Path:
    root = store(tmp)
    doc = yaml.safe_load((root / "results" / "sweep.yaml").read_text())
    doc["schema_version"] = 99
    (root / "results" / "sweep.yaml").write_text(yaml.safe_dump(doc))
    return root


def broken_store(tmp, sweep_yaml: str) -> Path:
    root = store(tmp)
    (root / "results" / "sweep.yaml").write_text(sweep_yaml)
    return root


def tiny_train(*overrides) -> list[str]:
    return ["train", "--config", QUICK, *sets(*TINY, *overrides), "--quiet"]


CASES = {
    # the CLI
    "config file missing": (lambda t: ["train", "--config", str(t / "nope.yaml")], "nope.yaml: file not found"),
    "resume without --out": (lambda t: ["train", "--resume"], "--out DIR is required"),
    "resume of no run": (lambda t: ["train", "--resume", "--out", str(t / "none")], "holds no run"),
    "run dir already used": (lambda t: ["train", "--config", QUICK, "--out", str(finished_run(t))],
                             "already holds a run"),
    "resume with another config": (lambda t: ["train", "--out", str(finished_run(t)), "--resume", "--config", QUICK],
                                   "differs from the one"),
    "override without =": (lambda t: ["train", "--config", QUICK, "--set", "bogus"], "not of the form"),
    "override empty part": (lambda t: ["train", "--config", QUICK, "--set", "loss..x=1"], "not of the form"),
    "override into a value": (lambda t: ["train", "--config", QUICK, "--set", "seed.x=1"], "is a value, not a section"),
    "override bad yaml": (lambda t: ["train", "--config", QUICK, "--set", "optim.milestones=[1"], "not valid YAML"),
    "workers not dividing batch": (lambda t: ["train", "--config", QUICK, "--workers", "3", "--out", str(t / "w")],
                                   "not divisible by --workers 3"),
    "fuse without seeds": (lambda t: ["train", "--config", QUICK, "--fuse", "--out", str(t / "f")],
                           "--fuse: give the seeds it trains together"),
    "seeds repeated": (lambda t: ["train", "--config", QUICK, "--seeds", "1", "1", "--out", str(t / "f")],
                       "--seeds: [1, 1] repeats a seed"),
    "seeds negative": (lambda t: ["train", "--config", QUICK, "--seeds", "-1", "2", "--out", str(t / "f")],
                       "--seeds: [-1, 2]; allowed: integers 0 .. 4294967295"),
    "seeds with workers": (lambda t: ["train", "--config", QUICK, "--seeds", "0", "1", "--workers", "2", "--out",
                                      str(t / "f")], "--workers: 2 with --seeds/--fuse"),
    "seeds resuming a one-seed run": (lambda t: ["train", "--out", str(finished_run(t)), "--resume", "--seeds", "0"],
                                      "holds no multi-seed run"),
    "fuse with compile": (lambda t: ["train", "--config", QUICK, "--set", "train.compile=true", "--seeds", "0", "1",
                                     "--fuse", "--out", str(t / "f")], "--fuse: train.compile is True"),
    "cuda without a gpu": (lambda t: ["train", "--config", QUICK, "--set", "train.device=cuda", "--out", str(t / "c")],
                           "train.device: 'cuda'"),
    # run configs
    "unknown section": (lambda t: ["train", "--config", run_config(t, lossy={"x": 1})], "lossy: unknown key"),
    "unknown key": (lambda t: ["train", "--config", run_config(t, loss={"tau": 0.1})], "loss.tau: unknown key"),
    "wrong type": (lambda t: ["train", "--config", run_config(t, train={"epochs": "ten"})], "train.epochs"),
    "negative temperature": (lambda t: ["train", "--config", run_config(t, loss={"temperature": -1})],
                             "loss.temperature: Input should be greater than 0"),
    "unknown loss": (lambda t: ["train", "--config", run_config(t, loss={"contrastive": "simclr"})],
                     "loss.contrastive"),
    "unknown classifier loss": (lambda t: ["train", "--config", run_config(t, loss={"classifier": "hinge"})],
                                "loss.classifier: unknown value 'hinge'; allowed: 'ce'"),
    "unknown backbone": (lambda t: ["train", "--config", run_config(t, model={"backbone": "vgg"})], "model.backbone"),
    "milestones decreasing": (lambda t: ["train", "--config", run_config(t, optim={"milestones": [9, 3]})],
                              "optim.milestones"),
    "warm-up too long": (lambda t: ["train", "--config", run_config(t, optim={"warmup_epochs": 99})],
                         "optim.warmup_epochs"),
    "probability above 1": (lambda t: ["train", "--config", run_config(t, augment={"grayscale_p": 1.5})],
                             "augment.grayscale_p"),
    "config not a mapping": (lambda t: ["train", "--config", write(t / "l.yaml", "- a\n- b\n")],
                             "top level must be a mapping"),
    "config not yaml": (lambda t: ["train", "--config", write(t / "b.yaml", "loss: {a: [\n")], "not valid YAML"),
    "too many digits per class": (lambda t: ["data", "stats", "--config", QUICK, "--set", "data.max_count=500"],
                                  "data.max_count: 500"),
    # sweep specs
    "sweep unknown key": (lambda t: ["sweep", sweep_spec(t, budget=3)], "budget: unknown key"),
    # nothing listens on port 1: one line at once (Ray's own wait is minutes), no sweep folder left
    "sweep --address where no Ray answers": (lambda t: ["sweep", sweep_spec(t), "--address", "127.0.0.1:1"],
                                             "--address 127.0.0.1:1: no Ray cluster answers there"),
    "ablate --address malformed": (lambda t: ["ablate", ablation_spec(t), "--address", "ray-head"],
                                   "--address ray-head: Invalid address format: ray-head"),
    "sweep space not a field": (lambda t: ["sweep", sweep_spec(t, space={"loss.tau": {"uniform": [0.1, 1]}})],
                                "space.loss.tau: not a field"),
    "sweep loguniform at 0": (lambda t: ["sweep", sweep_spec(t, space={"loss.temperature": {"loguniform": [0, 1]}})],
                              "must be > 0"),
    "sweep bad choice": (lambda t: ["sweep", sweep_spec(t, space={"loss.contrastive": {"choice": ["sc", "x"]}})],
                         "value 'x' is not allowed"),
    "sweep unknown condition": (lambda t: ["sweep", sweep_spec(t, space={
        "curriculum.power": {"uniform": [1, 2], "when": {"curriculum.shape": "power"}}})], "curriculum.shape"),
    "sweep grid with tpe": (lambda t: ["sweep", sweep_spec(t, space={"loss.temperature": {"grid": [0.1, 1.0]}})],
                            "need search.algorithm: grid"),
    "sweep unknown metric": (lambda t: ["sweep", sweep_spec(t, objective={"metric": "top5"})], "unknown metric"),
    "sweep base missing": (lambda t: ["sweep", sweep_spec(t, base=str(t / "none.yaml"))], "none.yaml: file not found"),
    "sweep bad --set value": (lambda t: ["sweep", sweep_spec(t), "--set", "trials=abc"],
                              "--set: trials: Input should be a valid integer"),
    "sweep bad --set section": (lambda t: ["sweep", sweep_spec(t), "--set", "scheduler={kind: asha, grace_period: -1}"],
                                "--set: scheduler.grace_period: Input should be greater than or equal to 1"),
    "sweep resume of nothing": (lambda t: ["sweep", sweep_spec(t), "--resume"], "no sweep to resume"),
    "sweep name taken": (lambda t: (store(t / "sweeps", "quickstart"), ["sweep", sweep_spec(t)])[1], "already exists"),
    # ablation specs
    "ablation unknown reference": (lambda t: ["ablate", ablation_spec(t, reference="nope")], "is not a variant"),
    "ablation repeated seed": (lambda t: ["ablate", ablation_spec(t, seeds=[1, 1])], "repeats a seed"),
    "ablation bad variant": (lambda t: ["ablate", ablation_spec(t, variants={"v": ["loss.temperature=-1"]},
                                                                reference="v")], "variants.v: loss.temperature"),
    "ablation without spec": (lambda t: ["ablate"], "give a SPEC"),
    "ablation report of a sweep": (lambda t: ["ablate", "--report", str(store(t))], "not an ablation store"),
    # datasets
    "image list missing file": (lambda t: ["data", "stats", *image_list(t, train_lines=[
        "img/0.png 0\n", "img/9.png 1\n"])], "file not found"),
    "image list unknown label": (lambda t: ["data", "stats", *image_list(t, val_lines=["img/0.png 7\n"])],
                                 "label 7 is not a training class"),
    "image list empty class": (lambda t: ["data", "stats", *image_list(t, train_lines=[
        "img/0.png 0\n", "img/2.png 2\n"])], "class 1 has no training image"),
    "image list bad line": (lambda t: ["data", "stats", *image_list(t, train_lines=["img/0.png zero\n"])],
                            "expected 'relative/path label'"),
    "image list escapes root": (lambda t: ["data", "stats", *image_list(t, train_lines=["../x.png 0\n"])],
                                "points outside data.root"),
    "image not an image": (lambda t: ["train", *image_list(t, text_file=True), "--out", str(t / "r"), "--quiet"],
                           "cannot decode image"),
    "image not an image, in a loader worker": (lambda t: ["train", *image_list(t, text_file=True, workers=1), "--out",
                                                          str(t / "r"), "--quiet"], "3.png: cannot decode image"),
    "cifar files missing": (lambda t: cifar(t), "missing: test_batch"),
    "cifar file corrupt": (lambda t: cifar(t, corrupt=True), "data_batch_3: unreadable CIFAR file"),
    # 1. code from data files
    "cifar pickle that runs code": (lambda t: cifar_payload(t), "refers to posix.system"),
    "cifar batch not a dict": (lambda t: cifar_batch(t, [1, 2, 3]), "a dict expected, got list"),
    "cifar data of the wrong width": (lambda t: cifar_batch(t, {"data": [[0] * 100] * 2, "labels": [0, 1]}),
                                      "'data' is not N rows of 3072 pixel values"),
    "cifar pixel out of range": (lambda t: cifar_batch(t, {"data": [[300] * 3072] * 2, "labels": [0, 1]}),
                                 "allowed: pixel values 0 .. 255"),
    "cifar labels not integers": (lambda t: cifar_batch(t, {"data": [[0] * 3072] * 2, "labels": ["a", "b"]}),
                                  "'labels' is not a list of integer class ids"),
    "cifar labels count": (lambda t: cifar_batch(t, {"data": [[0] * 3072] * 2, "labels": [0]}),
                           "1 labels for 2 images"),
    # 2. resources from small inputs
    "yaml alias bomb": (lambda t: raw_config(t, "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a]\n"
                                                "c: [*b, *b, *b, *b, *b, *b]\n"), "anchor &a is not allowed"),
    "yaml alias alone": (lambda t: raw_config(t, "loss: {temperature: 0.1}\nx: *nowhere\n"), "not valid YAML"),
    "yaml file too large": (lambda t: raw_config(t, "# " + "x" * (1 << 20) + "\n"),
                            "bytes; allowed: at most 1048576 bytes (1 MiB)"),
    "spec file too large": (lambda t: ["sweep", write(t / "big.yaml", "# " + "x" * (1 << 20))],
                            "bytes; allowed: at most 1048576 bytes (1 MiB)"),
    # 3. silent wrong runs
    "duplicate key in a config": (lambda t: raw_config(t, "loss:\n  temperature: 0.1\n  temperature: 0.5\n"),
                                  "line 3, column 3: key 'temperature' is given twice (first on line 2)"),
    "duplicate section in a config": (lambda t: raw_config(t, "loss: {}\ntrain: {}\nloss: {}\n"),
                                      "key 'loss' is given twice (first on line 1)"),
    "duplicate key in a spec": (lambda t: ["sweep", write(t / "s.yaml", "name: a\nname: b\n")],
                                "key 'name' is given twice (first on line 1)"),
    "duplicate key in --set": (lambda t: tiny_train("loss={temperature: 1, temperature: 2}"), "is given twice"),
    "infinite temperature": (lambda t: tiny_train("loss.temperature=.inf"),
                             "loss.temperature: Input should be a finite number"),
    "nan learning rate": (lambda t: tiny_train("optim.lr=.nan"), "optim.lr: Input should be a finite number"),
    "infinite imbalance ratio": (lambda t: tiny_train("data.imbalance_ratio=.inf"), "data.imbalance_ratio"),
    "nan jitter": (lambda t: tiny_train("augment.jitter=[0.4, .nan, 0.4, 0.1]"), "augment.jitter.1"),
    "nan curriculum power": (lambda t: tiny_train("curriculum.power=.nan"), "curriculum.power"),
    "infinite search bound": (lambda t: ["sweep", sweep_spec(t, space={"loss.temperature": {"loguniform":
                                                                                            [0.05, float("inf")]}})],
                              "space.loss.temperature.loguniform.1: Input should be a finite number"),
    "ratio empties a class": (lambda t: tiny_train("data.imbalance_ratio=500"),
                              # 60 * 500^(-6/9) < 1
                              "60 images in the largest class leaves class 6 with no training image"),
    "boolean epochs": (lambda t: tiny_train("train.epochs=true"), "train.epochs: a number is expected, not a boolean"),
    "boolean max_count": (lambda t: tiny_train("data.max_count=true"), "data.max_count: a number is expected"),
    "boolean temperature": (lambda t: tiny_train("loss.temperature=false"), "loss.temperature: a number is expected"),
    "number as a flip flag": (lambda t: tiny_train("augment.flip=1"), "augment.flip: true or false is expected"),
    "string as amp flag": (lambda t: tiny_train("train.amp=yes please"), "train.amp"),
    "fractional epochs": (lambda t: tiny_train("train.epochs=2.5"), "train.epochs: Input should be a valid integer"),
    "fractional positives": (lambda t: tiny_train("sampler.positives=1.5"), "sampler.positives"),
    "boolean trials": (lambda t: ["sweep", sweep_spec(t, trials=True)], "trials: a number is expected"),
    "boolean concurrency": (lambda t: ["sweep", sweep_spec(t, concurrency=False)], "concurrency"),
    "empty validation list": (lambda t: ["train", *image_list(t, val_lines=["# none\n"]), "--out", str(t / "r")],
                              "val.txt: no images listed; allowed: at least one"),
    "newer store schema, export": (lambda t: ["export-best", str(newer_store(t)), "-o", str(t / "b.yaml")],
                                   "schema_version 99 was written by a newer hybridlt"),
    "newer store schema, ablation report": (lambda t: ["ablate", "--report", str(newer_store(t))],
                                            "schema_version 99"),
    # 4. tracebacks before
    "seed overflows": (lambda t: tiny_train(f"seed={2**70}"), "seed: Input should be less than or equal to 4294967295"),
    "negative data seed": (lambda t: tiny_train("data.seed=-1"), "data.seed: Input should be greater than or equal"),
    "search seed overflows": (lambda t: ["sweep", sweep_spec(t, search={"algorithm": "tpe", "seed": 2**40})],
                              "search.seed"),
    "ablation seed overflows": (lambda t: ["ablate", ablation_spec(t, seeds=[0, 2**40])], "seeds.1"),
    "run name too long": (lambda t: tiny_train("name=" + "a" * 300), "name: String should have at most 100"),
    "sweep name too long": (lambda t: ["sweep", sweep_spec(t, name="s" * 300)], "name: String should have at most"),
    "broken sweep.yaml in a store": (lambda t: ["export-best", str(broken_store(t, "spec: [unclosed")), "-o",
                                                str(t / "b.yaml")], "sweep.yaml: not readable YAML"),
    "sweep.yaml not a mapping": (lambda t: ["export-best", str(broken_store(t, "- a\n- b\n")), "-o",
                                            str(t / "b.yaml")], "sweep.yaml: expected a mapping, got list"),
    # 5. clear messages
    "config not utf-8": (lambda t: raw_config(t, "", data=b"loss:\n  temperature: 0.1 \xe9\xff\n"),
                         "raw.yaml: line 2, column 20: byte 0xe9 is not UTF-8"),
    "config is a folder": (lambda t: ["train", "--config", str(t)], "is a folder; a YAML file is expected"),
    "relative config missing": (lambda t: ["train", "--config", "surely/not/here.yaml"],
                                "(relative to the working directory"),
    "yaml error names the line": (lambda t: raw_config(t, "loss:\n  temperature: [0.1\ntrain: {}\n"), "line 3"),
    # results paths
    "export from no store": (lambda t: ["export-best", str(t / "nowhere"), "-o", str(t / "b.yaml")],
                             "not a hybridlt results store"),
    "export over a file": (lambda t: ["export-best", str(store(t)), "-o", write(t / "b.yaml", "keep")],
                           "exists; pass --force"),
    "export unknown metric": (lambda t: ["export-best", str(store(t)), "--metric", "few_acc", "-o", str(t / "o.yaml")],
                              "no trial reported 'few_acc'"),
    "dashboard of no store": (lambda t: ["dashboard", str(t / "nowhere")], "nowhere does not exist; give a sweep"),
    "export a metric not in the catalogue": (lambda t: ["export-best", str(store(t)), "--metric", "bogus", "-o",
                                                        str(t / "o.yaml")],
                                             "--metric: 'bogus' is not a metric of the store (--rank-by completed); "
                                             "allowed: acc, "),
    "export a train run directory": (lambda t: ["export-best", str(finished_run(t)), "-o", str(t / "o.yaml")],
                                     "is the run directory of one 'hybridlt train', not a sweep's results"),
    "a sweep spec given to train": (lambda t: ["train", "--config", str(SWEEP)],
                                    "a sweep spec (it has base: and space:), not a run config; run it with "
                                    "'hybridlt sweep"),
    "an ablation spec given to train": (lambda t: ["train", "--config", str(ABLATION)],
                                        "an ablation spec (it has base: and variants:), not a run config"),
    "a --set value is named as --set's": (lambda t: ["train", "--config", QUICK, *sets("data.test_per_class=0")],
                                          "error: --set: data.test_per_class: Input should be greater than or equal "
                                          "to 1 (value 0)"),
    "image folder root is a file": (lambda t: ["data", "stats", "--config", QUICK, *sets(
        "data.dataset=image_folder", f"data.root={write(t / 'f.txt', 'x')}")], "(found: a file, not a folder)"),
}



def train_set(*overrides) -> callable:
    return lambda t: ["train", "--config", QUICK, *sets(*overrides), "--out", str(t / "r")]


# class 3: silent wrong runs. Non-finite floats, bools taken for numbers, non-integral counts.
FINITE = ["loss.temperature", "optim.lr", "data.imbalance_ratio", "loss.la_tau", "loss.focal_gamma",
          "optim.weight_decay", "curriculum.power", "loss.ldam_scale", "optim.warmup_epochs", "loss.ldam_max_margin"]
for _field in FINITE:
    for _value in (".inf", ".nan"):
        CASES[f"{_field} = {_value}"] = (train_set(f"{_field}={_value}"), f"{_field}: Input should be a finite number")
for _field in ("loss.cb_beta", "loss.drw_start", "optim.momentum", "optim.gamma", "curriculum.value",
               "curriculum.switch", "curriculum.low", "augment.grayscale_p", "augment.jitter_p"):
    CASES[f"{_field} = nan"] = (train_set(f"{_field}=.nan"), f"{_field}: Input should be a finite number")
CASES["augment.jitter with nan"] = (train_set("augment.jitter=[0.4, .nan, 0.4, 0.1]"),
                                    "augment.jitter.1: Input should be a finite number")
CASES["augment.jitter with -inf"] = (train_set("augment.jitter=[-.inf, 0.4, 0.4, 0.1]"),
                                     "augment.jitter.0: Input should be a finite number")
for _field in ("augment.flip", "optim.nesterov", "train.amp", "data.download", "train.channels_last"):
    CASES[f"{_field} = 1"] = (train_set(f"{_field}=1"), f"{_field}: true or false is expected (value 1)")
CASES["train.compile = 1"] = (train_set("train.compile=1"), "train.compile: unknown value 1; allowed: false, true")
CASES["augment.flip = 'yes' (a string)"] = (train_set('augment.flip="yes"'), "augment.flip: ")  # noqa: E501
for _field, _value in (("train.epochs", "2.5"), ("train.batch_size", "64.0"), ("data.max_count", "10.5"),
                       ("model.proj_dim", "true"), ("sampler.positives", "1.5"), ("loss.prototypes_per_class", "2.0"),
                       ("data.few_below", "true"), ("train.epochs", '"3"'), ("optim.milestones", "[2.5]")):
    CASES[f"{_field} = {_value}"] = (train_set(f"{_field}={_value}"), f"{_field.split('.')[0]}.")
for _field, _value, _msg in (("seed", "-1", "greater than or equal to 0"),
                             ("seed", str(2**40), "less than or equal to 4294967295"),
                             ("seed", "99999999999999999999999", "less than or equal to 4294967295"),
                             ("data.seed", str(2**64), "less than or equal to 4294967295"),
                             ("name", "a" * 300, "name: String should have at most 100 characters"),
                             ("name", "../escape", "name: String should match pattern"),
                             # class 2: sizes far beyond memory are refused before anything is allocated
                             ("train.batch_size", str(10**9), "train.batch_size: Input should be less than or equal"),
                             ("train.eval_batch_size", str(10**9), "train.eval_batch_size: Input should be less"),
                             ("model.proj_dim", str(10**7), "model.proj_dim: Input should be less than or equal"),
                             ("model.proj_hidden", str(10**7), "model.proj_hidden: Input should be less than"),
                             ("data.image_size", "100000", "data.image_size: Input should be less than or equal"),
                             ("augment.crop_padding", "100000", "augment.crop_padding: Input should be less"),
                             ("train.epochs", str(10**9), "train.epochs: Input should be less than or equal"),
                             ("data.loader_workers", "100000", "data.loader_workers: Input should be less than"),
                             ("loss.prototypes_per_class", str(10**6), "loss.prototypes_per_class: Input should")):
    CASES[f"{_field} = {_value[:20]}"] = (train_set(f"{_field}={_value}"), _msg)

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))


def image_with_header(tmp, width: int, height: int) -> list[str]:
    """An image list whose image 1 is a PNG header claiming ``width`` x ``height`` (no pixel data)."""
    argv = image_list(tmp)
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    (tmp / "img" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)
    return argv


def store_with(tmp, sweep_yaml=None, trial_meta=None, conflicting=False) -> Path:
    where = store(tmp)
    results = where / "results"
    if sweep_yaml is not None:
        (results / "sweep.yaml").write_text(sweep_yaml)
    if trial_meta is not None:
        path = results / "trials" / "t1.parquet"
        table = pq.read_table(path)
        pq.write_table(table.replace_schema_metadata({"hybridlt_schema_version": trial_meta}), path)
    if conflicting:
        pq.write_table(pa.table({"trial_id": ["t2"], "status": ["completed"], "final_acc": ["high"]}),
                       results / "trials" / "t2.parquet")
    return where


def inat(tmp, doc) -> list[str]:
    argv = image_list(tmp)
    path = write(tmp / "train.json", json.dumps(doc))
    return [a.replace(str(tmp / "train.txt"), path) for a in argv]


CASES.update({
    # class 3, continued
    "repeated key in a config": (lambda t: ["train", "--config", write(t / "d.yaml", "seed: 1\nseed: 2\n")],
                                 "key 'seed' is given twice (first on line 1)"),
    "repeated nested key": (lambda t: ["train", "--config", write(t / "d.yaml", "loss:\n  temperature: 0.1\n"
                                                                   "  temperature: 0.5\n")], "key 'temperature'"),
    "repeated key in a sweep spec": (lambda t: ["sweep", write(t / "s.yaml", SWEEP.read_text() + "trials: 2\n"
                                                               "trials: 3\n")], "key 'trials' is given twice"),
    "imbalance leaves an empty class": (lambda t: ["data", "stats", "--config", QUICK, *sets(
        "data.imbalance_ratio=1000")], "leaves class 7 with no training image"),
    "step imbalance leaves empty classes": (lambda t: ["data", "stats", "--config", QUICK, *sets(
        "data.imbalance_ratio=500", "data.profile=step")], "leaves class 5 with no training image"),
    "image list empty validation set": (lambda t: ["data", "stats", *image_list(t, val_lines=["# none\n"])],
                                        "val.txt: no images listed"),
    "sweep bound inf": (lambda t: ["sweep", sweep_spec(t, space={"loss.temperature": {"uniform": [0.1, float("inf")]}})],  # noqa: E501
                        "Input should be a finite number"),
    "sweep bound nan": (lambda t: ["sweep", sweep_spec(t, space={"optim.lr": {"loguniform": [float("nan"), 1]}})],
                        "Input should be a finite number"),
    "sweep choice of inf": (lambda t: ["sweep", sweep_spec(t, space={"optim.lr": {"choice": [0.1, float("inf")]}})],
                            "value inf is not allowed"),
    "sweep trials true": (lambda t: ["sweep", sweep_spec(t, trials=True)], "trials: "),
    "sweep workers 1.5": (lambda t: ["sweep", sweep_spec(t, resources={"workers": 1.5})],
                          "resources.workers: Input should be a valid integer"),
    "sweep search seed negative": (lambda t: ["sweep", sweep_spec(t, search={"seed": -1})], "search.seed"),
    "sweep time budget inf": (lambda t: ["sweep", sweep_spec(t, time_budget_s=float("inf"))], "time_budget_s"),
    "sweep uniform on an int field": (lambda t: ["sweep", sweep_spec(t, space={"train.epochs": {"uniform": [1, 3]}})],
                                      "space.train.epochs: value 1.0 is not allowed"),
    "sweep name too long": (lambda t: ["sweep", sweep_spec(t, name="s" * 300)], "name: String should have at most 100"),
    "sweep log as 1": (lambda t: ["sweep", sweep_spec(t, space={"train.epochs": {"int": [1, 3], "log": 1}})],
                       "log: "),
    "ablation seed true": (lambda t: ["ablate", ablation_spec(t, seeds=[True, 1])], "seeds.0: "),
    "ablation seed 1.5": (lambda t: ["ablate", ablation_spec(t, seeds=[1.5])], "seeds.0: Input should be a valid integer"),  # noqa: E501
    "ablation variant with nan": (lambda t: ["ablate", ablation_spec(t, variants={"hot": ["optim.lr=.nan"]},
                                                                      reference="hot")], "variants.hot: optim.lr"),
    "store of a newer schema (sweep.yaml)": (lambda t: ["export-best", str(store_with(t, sweep_yaml="schema_version: 99\n")),  # noqa: E501
                                                        "-o", str(t / "o.yaml")], "schema_version 99"),
    "store of a newer schema (trials file)": (lambda t: ["export-best", str(store_with(t, trial_meta="99")), "-o",
                                                         str(t / "o.yaml")], "store schema version 99"),
    # class 2: small inputs that would expand or allocate without bound
    "yaml alias bomb": (lambda t: ["train", "--config", write(t / "bomb.yaml", BOMB)], "alias *a is not allowed"),
    "yaml single alias": (lambda t: ["train", "--config", write(t / "a.yaml", "x: &t 0.1\nloss: {temperature: *t}\n")],
                          "alias *t is not allowed"),
    "yaml merge key": (lambda t: ["train", "--config", write(t / "m.yaml", "a: &b {lr: 1}\noptim:\n  <<: *b\n")],
                       "alias *b is not allowed"),
    "alias in a sweep spec": (lambda t: ["sweep", write(t / "s.yaml", BOMB)], "alias *a is not allowed"),
    "alias in --set": (lambda t: ["train", "--config", QUICK, "--set", "optim.milestones=[&x 1, *x]"],
                       "alias *x is not allowed"),
    "config file over 1 MiB": (lambda t: ["train", "--config", write(t / "big.yaml", "# pad\n" * 200_000)],
                               "allowed: at most 1048576 bytes (1 MiB)"),
    "spec file over 1 MiB": (lambda t: ["sweep", write(t / "big.yaml", "#" * (1 << 20) + "\n")],
                             "allowed: at most 1048576 bytes"),
    "yaml nested too deeply": (lambda t: ["train", "--config", write(t / "deep.yaml", "a: " + "[" * 50_000)],
                               "nested too deeply"),
    "--set value too long": (lambda t: ["train", "--config", QUICK, "--set", "name=" + "x" * 20_000],
                             "allowed: at most 10000"),
    "image list huge label": (lambda t: ["data", "stats", *image_list(t, train_lines=["img/0.png 0\n",
                                                                                      "img/1.png 99999999999\n"])],
                              "class 1 has no training image (99999999998 empty classes"),
    "image list huge label in val": (lambda t: ["data", "stats", *image_list(t, val_lines=["img/0.png 10**12\n"])],
                                     "expected 'relative/path label'"),
    "image header claims 60000 x 60000": (lambda t: ["train", *image_with_header(t, 60000, 60000), "--out", str(t / "r"),  # noqa: E501
                                                     "--quiet"], "1.png"),
    "image over data.max_image_pixels": (lambda t: ["train", *image_list(t), "--set", "data.max_image_pixels=10",
                                                    "--out", str(t / "r"), "--quiet"],
                                         "8 x 8 = 64 pixels; allowed: at most data.max_image_pixels = 10"),
    "image over the pixel limit, in a loader worker": (lambda t: ["train", *image_list(t, workers=1), "--set",
                                                                  "data.max_image_pixels=10", "--out", str(t / "r"),
                                                                  "--quiet"], "data.max_image_pixels = 10"),
    # class 1: code in data files
    "cifar pickle runs code": (lambda t: cifar(t, batch3={"data": Payload(t / "pwned"), "labels": [0]}),
                               "refers to posix.system, which a CIFAR file never holds"),
    "cifar meta runs code": (lambda t: cifar(t, meta={"label_names": Payload(t / "pwned")}),
                             "batches.meta: unreadable CIFAR file"),
    "cifar pickle calls eval": (lambda t: (cifar(t, batch3={}), cifar_raw(t, b"cbuiltins\neval\n(S'1'\ntR."))[1],
                                "refers to builtins.eval"),
    # class 4: broken structure inside data files
    "cifar data of wrong dtype": (lambda t: cifar(t, batch3={"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}),  # noqa: E501
                                  "'data' is a float32 array of shape (2, 3072); allowed: uint8"),
    "cifar data of wrong shape": (lambda t: cifar(t, batch3={"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}),
                                  "allowed: uint8 of shape (N, 3072)"),
    "cifar label out of range": (lambda t: cifar(t, batch3={"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}),
                                 "'labels' holds label 10; allowed: 0 .. 9"),
    "cifar labels not one per image": (lambda t: cifar(t, batch3={"data": np.zeros((2, 3072), np.uint8), "labels": [0]}),  # noqa: E501
                                       "1 labels for 2 images"),
    "cifar labels not integers": (lambda t: cifar(t, batch3={"data": np.zeros((2, 3072), np.uint8),
                                                             "labels": ["a", "b"]}), "not a list of integer class ids"),
    "cifar batch not a dict": (lambda t: cifar(t, batch3=[1, 2]), "a dict expected, got list"),
    "cifar meta without names": (lambda t: cifar(t, meta={"label_names": "abc"}), "not a list of 10 class names"),
    "cifar pixel value 300": (lambda t: cifar(t, batch3={"data": [[300] * 3072], "labels": [0]}),
                              "allowed: pixel values 0 .. 255"),
    "inat images not a list": (lambda t: ["data", "stats", *inat(t, {"images": 5, "annotations": []})],
                               "not an iNaturalist annotation file"),
    "inat annotation of an unknown image": (lambda t: ["data", "stats", *inat(t, {"images": [], "annotations": [
        {"image_id": 1, "category_id": 0}]})], "not an iNaturalist annotation file (KeyError"),
    "inat category id not a number": (lambda t: ["data", "stats", *inat(t, {"images": [{"id": 1, "file_name": "a"}],
                                                                           "annotations": [{"image_id": 1,
                                                                                            "category_id": "x"}]})],
                                      "not an iNaturalist annotation file (ValueError"),
    "store files disagree on types": (lambda t: ["export-best", str(store_with(t, conflicting=True)), "-o",
                                                 str(t / "o.yaml")], "disagree on column types"),
    "store sweep.yaml broken": (lambda t: ["export-best", str(store_with(t, sweep_yaml="spec: [\n")), "-o",
                                           str(t / "o.yaml")], "sweep.yaml: not readable YAML"),
    "store sweep.yaml not a mapping": (lambda t: ["export-best", str(store_with(t, sweep_yaml="- 1\n")), "-o",
                                                  str(t / "o.yaml")], "expected a mapping, got list"),
    "export target is a folder": (lambda t: ["export-best", str(store(t)), "-o", str((t / "dir").mkdir() or t / "dir")],
                                  "is a folder; allowed: a file path"),
    "export target under a file": (lambda t: ["export-best", str(store(t)), "-o", str(Path(write(t / "f", "x")) / "o.yaml")],  # noqa: E501
                                   "cannot be written"),
    # class 5: unclear messages
    "config not UTF-8": (lambda t: ["train", "--config", str(write_bytes(t / "l.yaml", b"seed: 1\nname: \xff\n"))],
                         "line 2, column 7: byte 0xff is not UTF-8"),
    "config with NUL bytes": (lambda t: ["train", "--config", str(write_bytes(t / "n.yaml", b"seed: 1\0\0"))],
                              "not a text file (it holds NUL bytes)"),
    "config is a folder": (lambda t: ["train", "--config", str((t / "cfgdir").mkdir() or t / "cfgdir")],
                           "is a folder; allowed: a YAML file"),
    "config relative and missing": (lambda t: ["train", "--config", "no/such/cfg.yaml"],
                                    "(relative to the working directory"),
    "config key not text": (lambda t: ["train", "--config", write(t / "k.yaml", "1: x\n")], "key 1 is a int"),
    "image list not UTF-8": (lambda t: (image_list(t), write_bytes(t / "train.txt", b"img/0.png 0\nimg/\xfe.png 1\n"),
                                        ["data", "stats", *image_list_argv(t)])[2], "train.txt:2: byte 0xfe is not UTF-8"),  # noqa: E501
    "image list relative and missing": (lambda t: ["data", "stats", *[a.replace(str(t / "train.txt"), "rel/train.txt")
                                                                      for a in image_list(t)]],
                                        # from --set: made absolute against the working directory when read
                                        f"{Path.cwd() / 'rel' / 'train.txt'}: file not found"),
    "sweep spec not UTF-8": (lambda t: ["sweep", str(write_bytes(t / "s.yaml", b"name: \xc3\x28\n"))],
                             "byte 0xc3 is not UTF-8"),
    "yaml error is one line": (lambda t: ["train", "--config", write(t / "e.yaml", "loss:\n  temperature: [0.1\n")],
                               "not valid YAML (line"),
})


def read_only(path: Path) -> str:
    """An empty folder of mode 0555 (root ignores the mode: see ``READ_ONLY_CASES``)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    return str(path)


def a_file(path: Path) -> str:
    return write(path, "pre-existing\n")


HELD: list[socket.socket] = []  # listeners a case holds open while the command runs; closed after it


def port_in_use() -> int:
    """A port that a socket of this process listens on (127.0.0.1), as another program would."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    HELD.append(listener)
    return listener.getsockname()[1]


def dashboard(t, *options) -> list[str]:
    return ["dashboard", str(store(t)), *map(str, options)]


CASES.update({
    # class 4, continued: storage that is a file or cannot be written, said before Ray starts
    "storage is a file": (lambda t: ["sweep", sweep_spec(t), "--set", f"storage={a_file(t / 'f')}"],
                          "storage: {}/f is a file, not a folder; allowed: a folder this user can write"),
    "storage under a file": (lambda t: ["sweep", sweep_spec(t, storage=str(Path(a_file(t / "f")) / "sweeps"))],
                             "/f/sweeps cannot be created: {}/f is a file; allowed: a folder"),
    "storage read-only": (lambda t: ["sweep", sweep_spec(t), "--set", f"storage={read_only(t / 'ro')}"],
                          "storage: {}/ro is not writable (Permission denied); allowed: a folder this user can write"),
    "storage in a read-only folder": (lambda t: ["sweep", sweep_spec(t, storage=f"{read_only(t / 'ro')}/sweeps")],
                                      "storage: {}/ro/sweeps cannot be created (Permission denied)"),
    "storage name too long": (lambda t: ["sweep", sweep_spec(t, storage=str(t / ("s" * 300)))],
                              "cannot be created (File name too long)"),
    "sweep folder is a file": (lambda t: (a_file(t / "sweeps" / "quickstart"), ["sweep", sweep_spec(t)])[1],
                               "storage: {}/sweeps/quickstart is a file, not a folder"),
    "ablation storage is a file": (lambda t: ["ablate", ablation_spec(t, storage=a_file(t / "f"))],
                                   "storage: {}/f is a file, not a folder"),
    "ablation storage read-only": (lambda t: ["ablate", ablation_spec(t, storage=read_only(t / "ro"))],
                                   "storage: {}/ro is not writable (Permission denied)"),
    "train --out is a file": (lambda t: tiny_train() + ["--out", a_file(t / "f")],
                              "--out: {}/f is a file, not a folder; allowed: a folder this user can write"),
    "train --out under a file": (lambda t: tiny_train() + ["--out", a_file(t / "f") + "/run"],
                                 "--out: {}/f/run cannot be created: {}/f is a file"),
    "train --out read-only": (lambda t: tiny_train() + ["--out", read_only(t / "ro")],
                              "--out: {}/ro is not writable (Permission denied)"),
    "train --out in a read-only folder": (lambda t: tiny_train() + ["--out", read_only(t / "ro") + "/run"],
                                          "--out: {}/ro/run cannot be created (Permission denied)"),
    "train --resume of a file": (lambda t: ["train", "--resume", "--out", a_file(t / "f")],
                                 "--out: {}/f is a file, not a folder"),
    "train --resume of a read-only run": (lambda t: ["train", "--resume", "--out",
                                                     read_only_run(finished_run(t))],
                                          "--out: {}/run is not writable (Permission denied)"),
    # class 4, continued: the dashboard's address
    "dashboard port in use": (lambda t: dashboard(t, "--port", port_in_use()),
                              "on 127.0.0.1 is in use by another program; allowed: a free port"),
    "dashboard port in use on the given host": (lambda t: dashboard(t, "--host", "127.0.0.1", "--port", port_in_use()),
                                                "is in use by another program"),
    "dashboard port 0": (lambda t: dashboard(t, "--port", 0), "--port: 0; allowed: 1 .. 65535"),
    "dashboard port 65536": (lambda t: dashboard(t, "--port", 65536), "--port: 65536; allowed: 1 .. 65535"),
    "dashboard port negative": (lambda t: dashboard(t, "--port", -1), "--port: -1; allowed: 1 .. 65535"),
    "dashboard host does not resolve": (lambda t: dashboard(t, "--host", "no-such-host.invalid"),
                                        "--host: 'no-such-host.invalid' does not resolve"),
    "dashboard host not of this machine": (lambda t: dashboard(t, "--host", "192.0.2.1"),  # TEST-NET-1, RFC 5737
                                           "cannot listen on 192.0.2.1 port 8050 (Cannot assign requested address)"),
})

# A folder's mode does not stop root: as root these run in a child without CAP_DAC_OVERRIDE.
READ_ONLY_CASES = {name for name in CASES if "read-only" in name}


def read_only_run(run: Path) -> str:
    run.chmod(0o555)
    return str(run)


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def image_list_argv(tmp) -> list[str]:
    """The argv of ``image_list`` without rewriting its files."""
    return ["--config", QUICK, *sets("data.dataset=image_list", f"data.root={tmp}", f"data.train_list={tmp / 'train.txt'}",  # noqa: E501
                                     f"data.val_list={tmp / 'val.txt'}", "data.image_size=8", "train.epochs=1",
                                     "optim.warmup_epochs=0")]


def cifar_raw(tmp, data: bytes) -> list[str]:
    (tmp / "cifar" / "cifar-10-batches-py" / "data_batch_3").write_bytes(data)
    return ["data", "stats", "--config", QUICK, *sets("data.dataset=cifar10_lt", f"data.root={tmp / 'cifar'}")]

def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def drop_dac_override() -> None:
    """In a child before exec: take CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH out of the bounding set,
    so that the program it execs runs as root that obeys file modes (PR_CAPBSET_DROP)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_obeying_modes(argv: list[str], cwd: Path) -> tuple[int, str]:
    """``hybridlt argv`` in a child process that file modes bind even when the tests run as root."""
    code = "import sys; from hybridlt.cli import main; sys.exit(main(sys.argv[1:]))"
    try:
        proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300,
                              preexec_fn=drop_dac_override if os.geteuid() == 0 else None, cwd=cwd,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    except subprocess.SubprocessError as exc:
        pytest.skip(f"root here cannot drop CAP_DAC_OVERRIDE ({exc}), so a read-only folder does not stop it")
    return proc.returncode, proc.stderr


def run_in_process(argv: list[str], capsys) -> tuple[int, str]:
    """``main(argv)``; a dashboard that would serve instead of refusing is stopped by an alarm."""
    def refuse_to_wait(signum, frame):
        raise TimeoutError("the dashboard started serving instead of refusing its address")

    previous = signal.signal(signal.SIGALRM, refuse_to_wait)
    signal.alarm(60 if argv[0] == "dashboard" else 0)
    try:
        return main(argv), capsys.readouterr().err
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        while HELD:
            HELD.pop().close()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, tmp_path, capsys):
    make_argv, expected = CASES[case]
    argv = make_argv(tmp_path)
    expected = expected.replace("{}", str(tmp_path))
    capsys.readouterr()
    before = snapshot(tmp_path)
    if case in READ_ONLY_CASES and os.geteuid() == 0:
        code, err = run_obeying_modes(argv, tmp_path)
    else:
        code, err = run_in_process(argv, capsys)
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and expected in lines[0], err
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing already written changed


def test_catalogue_is_large_enough():
    assert len(CASES) >= 150


def test_a_cifar_payload_does_not_run(tmp_path, capsys):
    """The marker file a crafted pickle would write through os.system is never created."""
    argv = cifar(tmp_path, batch3={"data": Payload(tmp_path / "pwned"), "labels": [0]})
    with open(tmp_path / "cifar" / "cifar-10-batches-py" / "data_batch_3", "rb") as f:
        assert b"system" in f.read()  # the payload is really there
    assert main(argv) == 2
    assert not (tmp_path / "pwned").exists()
    assert "refers to posix.system" in capsys.readouterr().err


def test_bom_config_is_read(tmp_path, capsys):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + Path(QUICK).read_bytes())
    assert main(["data", "stats", "--config", str(path)]) == 0


RESOURCE_CASES = ["yaml alias bomb", "yaml nested too deeply", "config file over 1 MiB", "image list huge label",
                  "image header claims 60000 x 60000"]


def _limits():
    resource.setrlimit(resource.RLIMIT_CPU, (120, 120))
    resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30))


@pytest.mark.parametrize("case", RESOURCE_CASES)
def test_resource_case_under_limits(case, tmp_path):
    """The resource cases again in a child process held to 3 GiB of data and 120 s of CPU."""
    make_argv, expected = CASES[case]
    argv = make_argv(tmp_path)
    code = ("import sys; from hybridlt.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300,
                          preexec_fn=_limits, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and expected in lines[0], proc.stderr
