"""The training loop end to end on digits-LT: resume equality, NaN stop, checkpoints, learning."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
import pytest
import torch

from hybridlt.model.checkpoint import load_checkpoint
from hybridlt.model.losses import FeatureCELoss, MPSCLoss, PSCLoss, SupConLoss
from hybridlt.model.train import NonFiniteLossError
from hybridlt.sweep.build import build_run
from hybridlt.sweep.run import RunDirError, checkpoints, train_local


class Crash(Exception):
    pass


def _weights(path):
    return load_checkpoint(path)["model"]


def test_resume_equals_uninterrupted_run(tmp_path, tiny_cfg):
    cfg = tiny_cfg("loss.contrastive=psc")
    train_local(cfg, tmp_path / "straight")

    def crash_after_first(metrics):
        if metrics["epoch"] == 1:
            raise Crash

    with pytest.raises(Crash):
        train_local(cfg, tmp_path / "split", on_epoch=crash_after_first)
    assert [p.name for p in checkpoints(tmp_path / "split")] == ["epoch-0001.pt"]
    train_local(None, tmp_path / "split", resume=True)

    a = _weights(tmp_path / "straight" / "checkpoints" / "epoch-0002.pt")
    b = _weights(tmp_path / "split" / "checkpoints" / "epoch-0002.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    epochs = ds.dataset(tmp_path / "split" / "epochs").to_table().to_pandas()
    assert sorted(epochs["epoch"]) == [1, 2]  # each epoch once, none repeated by the resume


def test_run_writes_documented_tables(tmp_path, tiny_cfg):
    metrics, parts = train_local(tiny_cfg(), tmp_path / "run")
    epochs = ds.dataset(tmp_path / "run" / "epochs").to_table().to_pandas()
    per_class = ds.dataset(tmp_path / "run" / "per_class").to_table().to_pandas()
    assert list(epochs["epoch"]) == [1, 2]
    assert {"loss", "con_loss", "ce_loss", "alpha", "lr", "acc", "many_acc", "medium_acc", "few_acc",
            "balanced_acc"} <= set(epochs.columns)
    assert len(per_class) == 2 * 10  # one row per class per epoch
    last = per_class[per_class.epoch == 2].sort_values("class_index")
    assert list(last["train_count"]) == parts.class_counts
    assert last["accuracy"].tolist() == pytest.approx(metrics["per_class_acc"])
    assert epochs["alpha"].tolist() == pytest.approx([1.0, 1 - (1 / 2) ** 2])
    assert not list((tmp_path / "run").rglob(".*.tmp"))


def test_refuses_to_overwrite_a_run(tmp_path, tiny_cfg):
    train_local(tiny_cfg("train.epochs=1"), tmp_path / "run")
    before = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(RunDirError, match="already holds a run"):
        train_local(tiny_cfg("train.epochs=1"), tmp_path / "run")
    with pytest.raises(RunDirError, match="differs"):
        train_local(tiny_cfg("train.epochs=3"), tmp_path / "run", resume=True)
    assert (tmp_path / "run" / "config.yaml").read_text() == before


def test_resume_skips_a_corrupt_checkpoint(tmp_path, tiny_cfg):
    cfg = tiny_cfg("train.epochs=3")

    def crash_after_second(metrics):
        if metrics["epoch"] == 2:
            raise Crash

    with pytest.raises(Crash):
        train_local(cfg, tmp_path / "run", on_epoch=crash_after_second)
    newest = tmp_path / "run" / "checkpoints" / "epoch-0002.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    warnings = []
    metrics, parts = train_local(None, tmp_path / "run", resume=True, warn=warnings.append)
    assert len(warnings) == 1 and str(newest) in warnings[0]
    assert metrics["epoch"] == 3
    epochs = ds.dataset(tmp_path / "run" / "epochs").to_table().to_pandas()
    assert sorted(epochs["epoch"]) == [1, 2, 3]  # epoch 2 re-run from epoch 1's checkpoint, rewritten once


class NaNAt(torch.nn.Module):
    """Wraps the objective as DDP does (``.module``); its ``n``-th call returns a NaN loss."""

    def __init__(self, module, n):
        super().__init__()
        self.module, self.n, self.calls = module, n, 0

    def forward(self, *args):
        loss, con, ce = self.module(*args)
        self.calls += 1
        return (loss * float("nan") if self.calls == self.n else loss), con, ce


def test_nan_loss_stops_with_epoch_and_step(tiny_cfg):
    parts = build_run(tiny_cfg("train.batch_size=32"))
    steps = parts.trainer.streams.steps_per_epoch
    parts.trainer.objective = NaNAt(parts.trainer.objective, steps + 3)
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 3"):
        parts.trainer.fit(lambda m, c: None)


EXPECTED_BRANCH = {"sc": SupConLoss, "psc": PSCLoss, "mpsc": MPSCLoss, "ce": FeatureCELoss}


@pytest.mark.parametrize("contrastive", sorted(EXPECTED_BRANCH))
def test_every_branch_loss_is_built_as_named_and_trains(contrastive, tiny_cfg):
    """The run builder turns each name into its own loss class with the configured temperature (and
    prototypes), and the epoch's contrastive loss is that module's value, not another's."""
    cfg = tiny_cfg(f"loss.contrastive={contrastive}", "loss.prototypes_per_class=3", "loss.temperature=0.37",
                   "train.epochs=1")
    parts = build_run(cfg)
    built = parts.trainer.core.contrastive
    assert type(built) is EXPECTED_BRANCH[contrastive] and built.temperature == 0.37
    if contrastive == "mpsc":
        assert tuple(built.prototypes.shape[:2]) == (10, 3)
    metrics = parts.trainer.fit(lambda m, c: None)
    assert metrics["con_loss"] == metrics["con_loss"] and 0 <= metrics["acc"] <= 1


def test_two_stage_freezes_backbone(tiny_cfg):
    parts = build_run(tiny_cfg("curriculum.kind=two_stage", "curriculum.switch=0.5"))
    net = parts.trainer.core.net
    seen = {}

    def report(metrics, ckpt):
        seen[metrics["epoch"]] = ({k: v.clone() for k, v in net.backbone.state_dict().items()},
                                  net.classifier.weight.detach().clone(), metrics)

    parts.trainer.fit(report)
    (b1, c1, m1), (b2, c2, m2) = seen[1], seen[2]
    assert all(torch.equal(b1[k], b2[k]) for k in b1)  # frozen, BN statistics included
    assert not torch.equal(c1, c2)
    assert m1["alpha"] == 1.0 and m2["alpha"] == 0.0 and m2["con_loss"] is None


def test_digits_lt_beats_chance_by_far(tiny_cfg):
    cfg = tiny_cfg("train.epochs=15", "data.max_count=100", "data.test_per_class=40")
    metrics = build_run(cfg).trainer.fit(lambda m, c: None)
    assert metrics["acc"] > 0.6  # chance is 0.1
    assert metrics["many_acc"] is not None and metrics["few_acc"] is not None


def test_compiled_objective_trains_like_eager(tiny_cfg, monkeypatch):
    """train.compile wraps the objective in torch.compile; same seed, same data: the same losses
    up to kernel rounding, and checkpoints still hold the plain module's state. Traced through
    Dynamo and AOTAutograd as on a GPU, but with the aot_eager backend: Inductor's C++ build of a
    ResNet step costs about a minute of this CPU and is torch's to test, not ours."""
    real, modes = torch.compile, []

    def compile_(obj, mode=None, **kwargs):
        modes.append(mode)
        return real(obj, backend="aot_eager", **kwargs)

    monkeypatch.setattr(torch, "compile", compile_)
    eager = build_run(tiny_cfg("train.epochs=1")).trainer
    compiled = build_run(tiny_cfg("train.epochs=1", "train.compile=true")).trainer
    assert type(compiled.objective).__name__ == "OptimizedModule" and modes == [None]
    a, b = eager.fit(lambda m, c: None), compiled.fit(lambda m, c: None)
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)
    state = compiled.state_dict(1)["model"]
    assert not any(k.startswith("_orig_mod") for k in state) and state.keys() == eager.state_dict(1)["model"].keys()


def test_a_run_that_fails_before_its_first_epoch_leaves_nothing_to_refuse_the_corrected_one(tmp_path):
    """Bad data: one error, and the same --out then takes the corrected command (no 'already holds a
    run', no --resume against the bad config); in a folder that existed, what was there stays."""
    import hybridlt
    from hybridlt.sweep.run import SEEDS_FILE
    from tests.conftest import TINY

    bad = [*TINY, "data.dataset=image_folder", f"data.root={tmp_path / 'nope'}", "data.imbalance_ratio=1"]
    quick = str(Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml")
    def one(overrides, out):
        return hybridlt.train(quick, overrides, out=out)

    def seeds(overrides, out):
        return hybridlt.train_seeds(quick, [0, 1], overrides, out=out)

    for out, run in ((tmp_path / "new", one), (tmp_path / "seeds", seeds)):
        with pytest.raises(hybridlt.InputError, match="must hold train/ and test/"):
            run(bad, out)
        assert not out.exists()
        run([*TINY, "train.epochs=1"], out)
        assert (out / "config.yaml").is_file() or (out / SEEDS_FILE).is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    with pytest.raises(hybridlt.InputError):
        hybridlt.train(quick, bad, out=mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    # a run that had started (a config.yaml from before this call) is not taken back by a refused start
    with pytest.raises(RunDirError, match="already holds a run"):
        hybridlt.train(quick, bad, out=tmp_path / "new")
    assert (tmp_path / "new" / "config.yaml").is_file()


def test_resume_with_set_names_the_key_it_changes(tmp_path, capsys):
    """``--resume --set train.epochs=12`` on a run of 2 epochs: the difference is train.epochs, not the
    first key where the defaults differ from the recorded config (its name)."""
    import hybridlt
    from hybridlt.cli import main
    from tests.conftest import TINY

    quick = str(Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml")
    hybridlt.train(quick, TINY, out=tmp_path / "r")
    with pytest.raises(RunDirError, match=r"\(train.epochs: 2 -> 12\)"):
        hybridlt.train(None, ["train.epochs=12"], out=tmp_path / "r", resume=True)
    assert main(["train", "--out", str(tmp_path / "r"), "--resume", "--set", "train.epochs=12"]) == 2
    assert "(train.epochs: 2 -> 12)" in capsys.readouterr().err
    hybridlt.train_seeds(quick, [0, 1], TINY, out=tmp_path / "s")
    with pytest.raises(RunDirError, match=r"\(train.epochs: 2 -> 12\)"):
        hybridlt.train_seeds(None, None, ["train.epochs=12"], out=tmp_path / "s", resume=True)


def test_ddp_workers_get_the_threads_of_their_cpus(tmp_path, tiny_cfg, monkeypatch):
    """``train --workers N --cpus-per-worker 2``: each worker resets its process with the CPUs it
    holds (worker_loop -> reset_trial_process(seed, config['cpus'])), not the default of one."""
    import hybridlt.sweep.trial as trial
    import hybridlt.sweep.tuner as tuner
    from hybridlt.sweep.run import train_distributed

    seen = {}

    class Result:
        error, metrics = None, {"acc": 1.0}

    def fake_fit(loop_config, *args, **kwargs):
        seen.update(loop_config, workers=args[2], cpus_per_worker=args[3])
        return Result()

    monkeypatch.setattr(trial, "fit_with_train", fake_fit)
    monkeypatch.setattr(tuner, "start_ray", lambda *a, **k: None)
    train_distributed(tiny_cfg(), tmp_path / "run", workers=2, cpus_per_worker=2.0)
    assert (seen["workers"], seen["cpus_per_worker"], seen["cpus"]) == (2, 2.0, 2.0)
