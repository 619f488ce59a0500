"""The bad-input catalogue: every case is answered by one line on stderr that names the field or
file, the value and what is allowed; exit code 2; no traceback; nothing already written changes.

Each case builds what it needs under ``tmp_path`` and returns the argv of one ``hybridlt`` call.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

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


def cifar(tmp, corrupt=False) -> list[str]:
    folder = tmp / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": [[0] * 3072] * 2, "labels": [0, 1]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    if corrupt:
        (folder / "data_batch_3").write_bytes(b"\x80\x04garbage")
    else:
        (folder / "test_batch").unlink()
    return ["data", "stats", "--config", QUICK, *sets("data.dataset=cifar10_lt", f"data.root={tmp / 'cifar'}")]


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
    # results paths
    "export from no store": (lambda t: ["export-best", str(t / "nowhere"), "-o", str(t / "b.yaml")],
                             "not a hybridlt results store"),
    "export over a file": (lambda t: ["export-best", str(store(t)), "-o", write(t / "b.yaml", "keep")],
                           "exists; pass --force"),
    "export unknown metric": (lambda t: ["export-best", str(store(t)), "--metric", "few_acc", "-o", str(t / "o.yaml")],
                              "no trial reported 'few_acc'"),
    "dashboard of no store": (lambda t: ["dashboard", str(t / "nowhere")], "nowhere does not exist; give a sweep"),
}


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, tmp_path, capsys):
    make_argv, expected = CASES[case]
    argv = make_argv(tmp_path)
    capsys.readouterr()
    before = snapshot(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) >= 1 and expected in err, err
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing already written changed


def test_catalogue_is_large_enough():
    assert len(CASES) >= 40
