"""The sweep's Optuna study in SQLite, opened by Optuna itself and by a real optuna-dashboard server,
and the README's DuckDB query over the same sweep's Parquet files.

One real sweep (local Ray, 2 CPUs, tiny digits-LT trials) serves the module.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")
optuna = pytest.importorskip("optuna")

from hybridlt.sweep.results import best_trial, read_dataset  # noqa: E402
from hybridlt.sweep.spec import SweepSpec, load_sweep_spec  # noqa: E402
from hybridlt.sweep.study import default_storage_url, study_url  # noqa: E402
from hybridlt.sweep.tuner import run_sweep, start_ray  # noqa: E402
from tests.conftest import TINY  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TRIALS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    doc = {
        "name": "qs", "storage": str(tmp / "sweeps"), "base": str(ROOT / "configs" / "quickstart.yaml"),
        "overrides": [*TINY, "train.epochs=2"],
        "space": {"loss.contrastive": {"choice": ["sc", "psc", "mpsc"]},
                  "loss.temperature": {"loguniform": [0.05, 1.0]},
                  "loss.prototypes_per_class": {"int": [2, 3], "when": {"loss.contrastive": "mpsc"}}},
        "scheduler": {"kind": "none"}, "trials": TRIALS, "concurrency": 2,
    }
    path = tmp / "qs.yaml"
    path.write_text(yaml.safe_dump(doc))
    spec, base = load_sweep_spec(path)
    start_ray(None, trial_slots=2, num_cpus=2)
    try:
        run_sweep(spec, base)
    finally:
        ray.shutdown()
    root = tmp / "sweeps" / "qs" / "results"
    return spec, root, read_dataset(root, "trials").to_pandas()


def test_study_lives_in_sqlite_beside_the_results(sweep):
    spec, root, trials = sweep
    db = root.parent / "optuna.db"
    assert db.is_file() and study_url(spec) == f"sqlite:///{db}"
    study = optuna.load_study(study_name="qs", storage=f"sqlite:///{db}")
    assert len(study.trials) == TRIALS
    by_id = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert set(by_id) == set(trials.trial_id)  # one Optuna trial per Tune trial, none twice
    for row in trials.itertuples():
        t = by_id[row.trial_id]
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert math.isclose(t.value, row.final_acc)  # told the trial's last reported acc
        assert t.params["loss.contrastive"] == trials.loc[row.Index, "param.loss.contrastive"]
        assert math.isclose(t.params["loss.temperature"], trials.loc[row.Index, "param.loss.temperature"])
        assert ("loss.prototypes_per_class" in t.params) == (t.params["loss.contrastive"] == "mpsc")
    assert study.best_value == trials.final_acc.max()
    importance = optuna.importance.get_param_importances(study)
    assert set(importance) <= {"loss.contrastive", "loss.temperature", "loss.prototypes_per_class"}
    assert importance and math.isclose(sum(importance.values()), 1.0)


def test_optuna_dashboard_lists_every_trial(sweep):
    spec, root, trials = sweep
    exe = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    assert exe, "optuna-dashboard is a dev dependency (pip install -e '.[dev]')"
    port = free_port()
    proc = subprocess.Popen([exe, study_url(spec), "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        studies = None
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=5) as r:
                    studies = json.load(r)["study_summaries"]
                break
            except OSError:
                time.sleep(0.3)
        assert studies is not None, proc.stdout.read().decode()[-2000:] if proc.poll() is not None else "no answer"
        (study,) = [s for s in studies if s["study_name"] == "qs"]
        with urllib.request.urlopen(f"{base}/api/studies/{study['study_id']}", timeout=30) as r:
            detail = json.load(r)
        listed = {next(a["value"] for a in t["user_attrs"] if a["key"] == "ray_trial_id"): t for t in detail["trials"]}
        assert set(listed) == set(trials.trial_id)
        for row in trials.itertuples():
            t = listed[row.trial_id]
            assert t["state"] == "Complete" and math.isclose(float(t["values"][0]), row.final_acc)
            params = {p["name"]: p["param_external_value"] for p in t["params"]}
            assert params["loss.contrastive"] == trials.loc[row.Index, "param.loss.contrastive"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_default_study_url_for_object_storage_is_a_local_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDLT_OPTUNA_DIR", str(tmp_path))
    a = default_storage_url("s3://bucket-a/hybridlt", "qs")
    b = default_storage_url("s3://bucket-b/hybridlt", "qs")
    assert a.startswith(f"sqlite:///{tmp_path}/qs-") and a.endswith(".db") and a != b
    assert default_storage_url("/data/sweeps", "qs") == "sqlite:////data/sweeps/qs/optuna.db"
    spec = SweepSpec.model_validate({"name": "qs", "base": {}, "space": {},
                                     "search": {"storage": "postgresql://me:secret@db.example/optuna"}})
    assert study_url(spec) == "postgresql://me:secret@db.example/optuna"
    assert "secret" not in json.dumps(spec.model_dump(mode="json"))  # sweep.yaml never holds the password


def test_a_storage_that_is_not_a_database_url_is_refused(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="search.storage|not an SQLAlchemy database URL"):
        SweepSpec.model_validate({"name": "qs", "base": {}, "space": {}, "search": {"storage": "my-study.db"}})


def readme_query(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- {marker} -->\s*```sql\n(.*?)```", text, re.S)
    assert m, f"README.md has no ```sql block after <!-- {marker} -->"
    return m.group(1)


def test_readme_duckdb_query_matches_the_project_reader(sweep, monkeypatch):
    duckdb = pytest.importorskip("duckdb")
    _, root, _ = sweep
    query = readme_query("duckdb-best-per-class")
    monkeypatch.chdir(root)  # the README runs it from the results folder
    got = duckdb.sql(query).fetchall()

    trials = read_dataset(root, "trials").to_pylist()
    best = best_trial(trials, "acc", "max")
    per_class = read_dataset(root, "per_class", name_prefix=f"{best['trial_id']}-epoch-").to_pylist()
    last = max(r["epoch"] for r in per_class)
    expected = sorted(((r["class_index"], r["class_name"], r["train_count"], r["accuracy"]) for r in per_class
                       if r["epoch"] == last), key=lambda r: (-r[2], r[0]))
    assert len(expected) == 10 and got == expected
    counts = [r[2] for r in got]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]  # long-tailed: head first


@pytest.mark.parametrize("url, private", [("postgresql://user:secret@db.example/optuna", True),
                                          ("postgresql://user@db.example/optuna", False), (None, False)])
def test_a_study_password_keeps_the_sweep_folder_private(tmp_path, url, private):
    """Tune pickles the study's URL into tuner.pkl: with a password in it, nobody else may read the folder."""
    from hybridlt.sweep.tuner import private_sweep_folder

    folder = tmp_path / "sweep"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    spec = SweepSpec(name="s", base={}, space={}, search={"storage": url} if url else {})
    assert private_sweep_folder(spec, folder) is private
    assert folder.stat().st_mode & 0o777 == (0o700 if private else 0o755)


def test_a_resumed_study_gets_the_finished_trials_it_was_never_told(tmp_path):
    """A driver killed after a trial's store row was written but before the study was told: the
    resume's study finishes that trial's RUNNING study trial, adds a finished trial it never had, and
    leaves a trial it was told alone (no duplicate)."""
    from optuna.trial import TrialState

    from hybridlt.sweep.searcher import optuna_study
    from hybridlt.sweep.study import TRIAL_ATTR

    spec, _ = load_sweep_spec(ROOT / "configs" / "sweeps" / "quickstart.yaml")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name=spec.name, direction="maximize")
    running = study.ask()
    running.set_user_attr(TRIAL_ATTR, "killed-before-tell")
    told = study.ask()
    told.set_user_attr(TRIAL_ATTR, "told")
    study.tell(told, 0.7)
    history = [("killed-before-tell", {}, [0.61]), ("told", {}, [0.7]), ("never-asked", {}, None)]
    optuna_study(spec, history, optuna.storages.RDBStorage(url))
    after = {t.user_attrs[TRIAL_ATTR]: (t.state, t.values) for t in optuna.load_study(
        study_name=spec.name, storage=url).get_trials()}
    assert after == {"killed-before-tell": (TrialState.COMPLETE, [0.61]), "told": (TrialState.COMPLETE, [0.7]),
                     "never-asked": (TrialState.FAIL, None)}
