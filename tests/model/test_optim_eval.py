"""Learning-rate schedule and optimiser groups, the accuracy report, and checkpoints."""

from __future__ import annotations

import copy
import math
import os
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hybridlt.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from hybridlt.model.evaluate import accuracy_report, count_correct
from hybridlt.model.losses import MPSCLoss, PSCLoss
from hybridlt.model.optim import build_optimizer, build_scheduler, lr_factor

# ---------------------------------------------------------------------------------------------
# lr_factor and the scheduler
# ---------------------------------------------------------------------------------------------


def test_warmup_is_a_linear_ramp_to_one():
    # 2 warm-up epochs of 10 steps: step s has factor (s + 1) / 20.
    factors = [lr_factor(s, 10, 6, "multistep", warmup_epochs=2, milestones=(4,)) for s in range(22)]
    assert factors[0] == pytest.approx(0.05)
    assert factors[9] == pytest.approx(0.5)
    assert factors[19] == pytest.approx(1.0)
    assert factors[20] == factors[21] == 1.0
    steps = [b - a for a, b in zip(factors[:20], factors[1:20], strict=False)]
    assert all(d == pytest.approx(0.05) for d in steps)


def test_fractional_warmup():
    assert [lr_factor(s, 4, 3, "constant", warmup_epochs=0.5) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("step", "want"),
    [(0, 1.0), (29, 1.0), (30, 0.1), (49, 0.1), (50, 0.01), (59, 0.01)],
)
def test_multistep_decays_at_milestones(step: int, want: float):
    assert lr_factor(step, 10, 6, "multistep", milestones=(3, 5), gamma=0.1) == pytest.approx(want, rel=1e-12)


def test_multistep_papers_cifar_schedule():
    # lr 0.5, x0.1 at epochs 120 and 160 (PAPER.md, Settings); 7 steps per epoch.
    def lr(epoch: int) -> float:
        return 0.5 * lr_factor(epoch * 7 + 3, 7, 200, "multistep", milestones=(120, 160), gamma=0.1)

    assert [lr(0), lr(119), lr(120), lr(159), lr(160), lr(199)] == pytest.approx(
        [0.5, 0.5, 0.05, 0.05, 0.005, 0.005], rel=1e-12)


def test_cosine_endpoints_and_midpoint():
    # 4 epochs x 5 steps, no warm-up: 0.5 (1 + cos(pi s / 20)).
    f = [lr_factor(s, 5, 4, "cosine") for s in range(21)]
    assert f[0] == 1.0
    assert f[10] == pytest.approx(0.5)
    assert f[5] == pytest.approx((1 + math.sqrt(0.5)) / 2)
    assert f[19] == pytest.approx(0.5 * (1 + math.cos(math.pi * 19 / 20)))
    assert f[20] == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(25, 5, 4, "cosine") == pytest.approx(0.0, abs=1e-12)  # clamped past the end


def test_cosine_after_warmup_starts_at_one():
    # 1 warm-up epoch of 5 steps; the cosine spans the remaining 15 steps.
    f = [lr_factor(s, 5, 4, "cosine", warmup_epochs=1) for s in range(21)]
    assert f[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert f[5] == pytest.approx(1.0)
    assert f[5 + 15 // 2] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 15)))
    assert f[20] == pytest.approx(0.0, abs=1e-12)


def test_unknown_schedule():
    with pytest.raises(ValueError, match="optim.schedule"):
        lr_factor(0, 10, 5, "poly")
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="poly"):
        build_scheduler(opt, 10, 5, "poly")


def make_run(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    opt = build_optimizer(model, lr=0.4, momentum=0.9, weight_decay=1e-4)
    sched = build_scheduler(opt, steps_per_epoch=4, epochs=5, schedule="multistep", warmup_epochs=1,
                            milestones=(2, 4), gamma=0.1)
    return model, opt, sched


def train_steps(model, opt, sched, n: int) -> list[float]:
    lrs = []
    for _ in range(n):
        opt.zero_grad()
        model(torch.ones(4, 3)).pow(2).sum().backward()
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def test_scheduler_follows_lr_factor():
    model, opt, sched = make_run()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)  # step 0 of a 4-step warm-up
    lrs = train_steps(model, opt, sched, 19)
    want = [0.4 * lr_factor(s, 4, 5, "multistep", 1, (2, 4), 0.1) for s in range(1, 20)]
    assert lrs == pytest.approx(want, rel=1e-12)
    assert lrs[2] == pytest.approx(0.4) and lrs[7] == pytest.approx(0.04) and lrs[15] == pytest.approx(0.004)


def test_scheduler_resumes_exactly_from_state_dict():
    model, opt, sched = make_run()
    reference = train_steps(model, opt, sched, 18)

    model, opt, sched = make_run()
    first = train_steps(model, opt, sched, 7)
    saved = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()})

    model2, opt2, sched2 = make_run(seed=123)  # a fresh run: different weights, step count 0
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    assert sched2.last_epoch == 7
    assert opt2.param_groups[0]["lr"] == first[-1]
    rest = train_steps(model2, opt2, sched2, 11)
    assert first + rest == reference
    assert first + rest != [reference[0]] * 18  # the schedule really moves over these steps


def test_build_optimizer_puts_prototypes_in_a_no_decay_group():
    torch.manual_seed(0)
    module = nn.ModuleDict({
        "net": nn.Linear(4, 3),
        "psc": PSCLoss(3, 4),
        "mpsc": MPSCLoss(3, 4, 2),
        "frozen": nn.Linear(2, 2),
    })
    for p in module["frozen"].parameters():
        p.requires_grad_(False)
    opt = build_optimizer(module, lr=0.2, momentum=0.9, weight_decay=5e-4)
    assert isinstance(opt, torch.optim.SGD)
    assert len(opt.param_groups) == 2
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    assert ids(no_decay["params"]) == {id(module["psc"].prototypes), id(module["mpsc"].prototypes)}
    assert ids(decay["params"]) == ids(module["net"].parameters())
    for group in opt.param_groups:
        assert group["lr"] == 0.2 and group["momentum"] == 0.9


def test_build_optimizer_without_prototypes_has_one_group():
    opt = build_optimizer(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1)), lr=0.1)
    assert len(opt.param_groups) == 1
    assert opt.param_groups[0]["weight_decay"] == 1e-4
    assert len(opt.param_groups[0]["params"]) == 4


def test_prototypes_are_not_decayed():
    # With zero gradient, a decayed parameter shrinks while a prototype stays put.
    torch.manual_seed(1)
    module = nn.ModuleDict({"net": nn.Linear(2, 2, bias=False), "psc": PSCLoss(2, 2)})
    before = {k: v.detach().clone() for k, v in module.named_parameters()}
    opt = build_optimizer(module, lr=1.0, momentum=0.0, weight_decay=0.1)
    for p in module.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(module["net"].weight, before["net.weight"] * 0.9)
    assert torch.equal(module["psc"].prototypes, before["psc.prototypes"])


# ---------------------------------------------------------------------------------------------
# accuracy_report and count_correct
# ---------------------------------------------------------------------------------------------


def test_accuracy_report_hand_values():
    correct = [8, 3, 0, 5, 1]
    total = [10, 4, 0, 10, 4]
    groups = {"many": [0, 1], "medium": [2, 3], "few": [4], "rare": []}
    report = accuracy_report(correct, total, groups)
    assert report["acc"] == pytest.approx(17 / 28)
    assert report["balanced_acc"] == pytest.approx((0.8 + 0.75 + 0.5 + 0.25) / 4)  # class 2 left out
    per_class = report["per_class_acc"]
    assert per_class[:2] == pytest.approx([0.8, 0.75])
    assert math.isnan(per_class[2])
    assert per_class[3:] == pytest.approx([0.5, 0.25])
    assert report["many_acc"] == pytest.approx((0.8 + 0.75) / 2)
    assert report["medium_acc"] == pytest.approx(0.5)  # mean of class 3 alone, not (nan, 0.5) nor (0, 0.5)
    assert report["few_acc"] == pytest.approx(0.25)
    assert report["rare_acc"] is None


def test_accuracy_report_group_of_untested_classes_is_none_not_zero():
    report = accuracy_report([4, 0, 0], [5, 0, 0], {"many": [0], "few": [1, 2]})
    assert report["many_acc"] == pytest.approx(0.8)
    assert report["few_acc"] is None
    assert report["acc"] == pytest.approx(0.8) and report["balanced_acc"] == pytest.approx(0.8)


def test_accuracy_report_zero_accuracy_group_is_zero():
    report = accuracy_report([0, 3], [2, 3], {"many": [1], "few": [0]})
    assert report["few_acc"] == 0.0
    assert report["many_acc"] == 1.0


def test_accuracy_report_accepts_tensors():
    correct, total = torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([2.0, 2.0], dtype=torch.float64)
    report = accuracy_report(correct, total, {})
    assert report["acc"] == pytest.approx(0.75) and report["balanced_acc"] == pytest.approx(0.75)
    assert report["per_class_acc"] == pytest.approx([0.5, 1.0])


class FixedPredictions(nn.Module):
    """Predicts the class stored in the first pixel of each image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.one_hot(x[:, 0, 0, 0].long(), 4).float() * 3.0 - 1.0


def test_count_correct_on_known_predictions():
    preds = [[0, 1, 2, 3, 0], [1, 1, 0, 3]]
    labels = [[0, 1, 1, 0, 0], [1, 2, 0, 3]]
    batches = []
    for p, y in zip(preds, labels, strict=True):
        x = torch.rand(len(p), 1, 2, 2)
        x[:, 0, 0, 0] = torch.tensor(p, dtype=torch.float)
        batches.append((x, torch.tensor(y)))
    correct, total = count_correct(FixedPredictions(), batches, 5, torch.device("cpu"))
    # class 0: labels at (b0: 0, 3, 4), (b1: 2) -> predicted 0, 3, 0, 0 -> 3 correct of 4
    # class 1: (b0: 1, 2), (b1: 0) -> 1, 2, 1 -> 2 of 3; class 2: (b1: 1) -> 1 -> 0 of 1
    # class 3: (b1: 3) -> 3 -> 1 of 1; class 4: never labelled
    assert correct.dtype == total.dtype == torch.float64
    assert correct.tolist() == [3.0, 2.0, 0.0, 1.0, 0.0]
    assert total.tolist() == [4.0, 3.0, 1.0, 1.0, 0.0]
    report = accuracy_report(correct, total, {"many": [0, 1], "few": [4]})
    assert report["acc"] == pytest.approx(6 / 9)
    assert report["few_acc"] is None


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def sample_state() -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 7,
            "history": [{"acc": 0.5, "loss": None}], "name": "run-a"}


def assert_same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


def test_checkpoint_round_trip(tmp_path):
    state = sample_state()
    path = save_checkpoint(state, tmp_path / "sub" / "ckpt.pt")
    assert path == tmp_path / "sub" / "ckpt.pt"
    loaded = load_checkpoint(path)
    assert_same(state, loaded)
    assert os.listdir(tmp_path / "sub") == ["ckpt.pt"]


def test_checkpoint_overwrite_leaves_no_temp_files(tmp_path):
    path = tmp_path / "ckpt.pt"
    state = sample_state()
    save_checkpoint(state, path)
    state["epoch"] = 8
    save_checkpoint(state, str(path))
    assert load_checkpoint(str(path))["epoch"] == 8
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_failed_save_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(sample_state(), path)
    bad = {"model": {}, "epoch": 9, "unpicklable": lambda: None}
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises
        save_checkpoint(bad, path)
    assert os.listdir(tmp_path) == ["ckpt.pt"]
    assert load_checkpoint(path)["epoch"] == 7


def assert_checkpoint_error(path) -> CheckpointError:
    with pytest.raises(CheckpointError) as excinfo:
        load_checkpoint(path)
    assert str(path) in str(excinfo.value)
    return excinfo.value


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(sample_state(), path)
    data = path.read_bytes()
    for size in (len(data) // 2, 10, 0):
        path.write_bytes(data[:size])
        assert_checkpoint_error(path)


def test_foreign_checkpoints(tmp_path):
    rng = random.Random(0)
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(rng.randrange(256) for _ in range(4096)))
    assert_checkpoint_error(noise)

    text = tmp_path / "notes.pt"
    text.write_text("epoch: 3\nmodel: none\n")
    assert_checkpoint_error(text)

    listed = tmp_path / "list.pt"
    torch.save([1, 2, 3], listed)
    assert "not a hybridlt checkpoint" in str(assert_checkpoint_error(listed))

    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    assert_checkpoint_error(tensor)

    other_dict = tmp_path / "other.pt"
    torch.save({"state_dict": {}, "step": 4}, other_dict)
    assert "not a hybridlt checkpoint" in str(assert_checkpoint_error(other_dict))


def test_missing_checkpoint(tmp_path):
    error = assert_checkpoint_error(tmp_path / "nowhere" / "ckpt.pt")
    assert "not found" in str(error)


# ---------------------------------------------------------------------------------------------
# long-tail diagnostics: group confusion, weight norms, logit adjustment and τ-norm accuracy
# ---------------------------------------------------------------------------------------------


class LinearOnFeatures(nn.Module):
    """The images are the features: ``classifier(x.flatten(1))``, a net whose logits are known by hand."""

    def __init__(self, weight, bias):
        super().__init__()
        self.classifier = nn.Linear(len(weight[0]), len(weight))
        with torch.no_grad():
            self.classifier.weight.copy_(torch.tensor(weight))
            self.classifier.bias.copy_(torch.tensor(bias))

    def forward(self, x):
        return self.classifier(x.flatten(1))


def _naive_diagnostics(weight, bias, feats, labels, train_counts, group_of):
    """The same quantities by a plain loop over samples and classes, in Python floats."""
    prior = [c / sum(train_counts) for c in train_counts]
    norms = [math.sqrt(sum(w * w for w in row)) for row in weight]
    C = len(weight)
    plain, la, tn = [0.0] * C, [0.0] * C, [0.0] * C
    conf = [[0] * 3 for _ in range(3)]
    for f, y in zip(feats, labels, strict=True):
        z = [sum(wi * fi for wi, fi in zip(weight[c], f, strict=True)) + bias[c] for c in range(C)]
        argmax = max(range(C), key=lambda c: z[c])
        plain[y] += argmax == y
        la[y] += max(range(C), key=lambda c: z[c] - math.log(prior[c])) == y
        tn[y] += max(range(C), key=lambda c: (z[c] - bias[c]) / norms[c]) == y
        conf[group_of[y]][group_of[argmax]] += 1
    return plain, la, tn, conf, norms


def test_count_eval_diagnostics_match_a_naive_loop():
    from hybridlt.model.evaluate import count_eval, diagnostics_report

    weight = [[3.0, 0.0], [0.0, 1.0], [0.5, 0.6]]  # class 0: a big norm (the head), class 2 small (the tail)
    bias = [0.2, 0.0, -0.1]
    train_counts = [100, 30, 5]
    groups = {"many": [0], "medium": [1], "few": [2]}
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(40, 2, generator=g).abs()
    labels = torch.randint(0, 3, (40,), generator=g)
    net = LinearOnFeatures(weight, bias)
    batches = [(feats[i:i + 16].view(-1, 1, 1, 2), labels[i:i + 16]) for i in range(0, 40, 16)]
    counts = count_eval(net, batches, 3, torch.device("cpu"), train_counts=train_counts, groups=groups)
    plain, la, tn, conf, norms = _naive_diagnostics(weight, bias, feats.tolist(), labels.tolist(), train_counts,
                                                    [0, 1, 2])
    assert counts.correct.tolist() == plain
    assert counts.la_correct.tolist() == la
    assert counts.taunorm_correct.tolist() == tn
    assert counts.confusion.tolist() == conf
    assert counts.weight_norm.tolist() == pytest.approx(norms)
    assert la != plain and tn != plain  # the example moves predictions, so the checks above are not vacuous
    report = diagnostics_report(counts, groups)
    total = counts.total.tolist()
    assert report["la_acc"] == pytest.approx(sum(la) / 40)
    assert report["taunorm_few_acc"] == pytest.approx(tn[2] / total[2])
    few_row = conf[2]
    assert report["confusion_few_to_many"] == pytest.approx(few_row[0] / sum(few_row))
    assert sum(report[f"confusion_few_to_{p}"] for p in ("many", "medium", "few")) == pytest.approx(1.0)
    assert report["per_class_weight_norm"] == pytest.approx(norms)


def test_count_correct_is_the_plain_part_of_count_eval():
    from hybridlt.model.evaluate import count_eval

    net = LinearOnFeatures([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    batches = [(torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]]).view(-1, 1, 1, 2), torch.tensor([0, 0, 1]))]
    correct, total = count_correct(net, batches, 2, torch.device("cpu"))
    assert correct.tolist() == [1.0, 0.0] and total.tolist() == [2.0, 1.0]
    assert count_eval(net, batches, 2, torch.device("cpu")).la_correct is None  # no train counts: no diagnostics
