"""The ``hybridlt`` CLI as a user types it: exit codes, one-line errors, the report tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridlt.cli import main
from tests.conftest import TINY

QUICKSTART = str(Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml")


def _sets(*extra):
    return [arg for s in (*TINY, *extra) for arg in ("--set", s)]


def test_train_prints_per_class_and_group_report(tmp_path, capsys):
    code = main(["train", "--config", QUICKSTART, *_sets("train.epochs=1"), "--out", str(tmp_path / "r"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "per-class accuracy" in out and "overall" in out and "many" in out and "few" in out
    assert (tmp_path / "r" / "config.yaml").is_file()
    assert list((tmp_path / "r" / "checkpoints").glob("epoch-0001.pt"))


def test_resume_of_finished_run_says_so(tmp_path, capsys):
    main(["train", "--config", QUICKSTART, *_sets("train.epochs=1"), "--out", str(tmp_path / "r"), "--quiet"])
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "r"), "--resume", "--quiet"]) == 0
    assert "already finished" in capsys.readouterr().out


@pytest.mark.parametrize("args, expected", [
    (["train", "--config", "missing.yaml"], "missing.yaml (relative to the working directory"),
    (["train", "--config", QUICKSTART, "--set", "loss.temperature=-1"], "loss.temperature"),
    (["train", "--config", QUICKSTART, "--set", "bogus"], "not of the form"),
    (["train", "--resume"], "--out DIR is required"),
    (["train", "--resume", "--out", "{tmp}/none"], "holds no run"),
    (["data", "stats", "--config", QUICKSTART, "--set", "data.max_count=500"], "data.max_count"),
    (["train", "--config", QUICKSTART, "--set", "data.dataset=cifar10_lt", "--set", "data.root={tmp}"],
     "set data.download: true"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, args, expected):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main([*args, "--quiet"] if args[0] == "train" else args) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err and err.startswith("error: ")


def test_data_stats_lists_counts_and_groups(capsys):
    assert main(["data", "stats", "--config", QUICKSTART]) == 0
    out = capsys.readouterr().out
    assert "120" in out and "many: 3 classes" in out and "few: 4 classes" in out
