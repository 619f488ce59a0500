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
    "yaml file too large": (lambda t: raw_config(t, "# " + "x" * (1 << 20) + "\n"), "may hold at most 1048576"),
    "spec file too large": (lambda t: ["sweep", write(t / "big.yaml", "# " + "x" * (1 << 20))],
                            "may hold at most 1048576"),
    # 3. silent wrong runs
    "duplicate key in a config": (lambda t: raw_config(t, "loss:\n  temperature: 0.1\n  temperature: 0.5\n"),
                                  "duplicate key 'temperature' (first at line 2)"),
    "duplicate section in a config": (lambda t: raw_config(t, "loss: {}\ntrain: {}\nloss: {}\n"),
                                      "duplicate key 'loss'"),
    "duplicate key in a spec": (lambda t: ["sweep", write(t / "s.yaml", "name: a\nname: b\n")],
                                "duplicate key 'name'"),
    "duplicate key in --set": (lambda t: tiny_train("loss={temperature: 1, temperature: 2}"), "duplicate key"),
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
                              "no test (validation) image"),
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
                         "raw.yaml, line 2: not UTF-8 text"),
    "config is a folder": (lambda t: ["train", "--config", str(t)], "is a folder; a YAML file is expected"),
    "relative config missing": (lambda t: ["train", "--config", "surely/not/here.yaml"],
                                "relative paths are taken from the working folder"),
    "yaml error names the line": (lambda t: raw_config(t, "loss:\n  temperature: [0.1\ntrain: {}\n"), "line 3"),
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
    assert len(CASES) >= 95


def test_a_crafted_cifar_pickle_does_not_run(tmp_path, capsys):
    """The payload would create PWNED through os.system under plain pickle.load; here it must not."""
    argv = cifar_payload(tmp_path)
    with open(tmp_path / "cifar" / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        assert b"system" in f.read()  # the file really carries the call
    assert main(argv) == 2
    assert not (tmp_path / "PWNED").exists()
    assert "refers to posix.system" in capsys.readouterr().err


def test_a_config_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeff".encode() + Path(QUICK).read_bytes())
    from hybridlt.sweep.config import load_run_config

    assert load_run_config(path) == load_run_config(QUICK)
