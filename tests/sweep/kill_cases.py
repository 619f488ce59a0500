"""Kill a real sweep driver at a chosen moment with a chosen signal, resume it, and count the damage.

Used by ``tests/sweep/test_kill_matrix.py`` (a diagonal of the matrix) and runnable as a script for
the whole matrix (``python -m tests.sweep.kill_cases [--moments ...] [--signals ...]``), which
prints one line per case: trials lost, duplicated, re-run, epoch rows duplicated.

Moments are the ``pause_at`` points of ``hybridlt.sweep.faults`` (the process that reaches one
writes a marker and waits there) plus ``mid_trial`` (some trial has written an epoch, no pause).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hybridlt.sweep.results import FINISHED, read_dataset

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "hybridlt.cli"]
MOMENTS = ("start_ray", "before_trials", "trial_start", "mid_trial", "write_row", "final_table", "export")
SIGNALS = ("int1", "int2", "term", "kill_driver", "kill_group")
TRIALS, EPOCHS = 3, 3


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HYBRIDLT_REUSE_ACTORS": "1", **extra}


def write_spec(folder: Path, name: str) -> Path:
    from tests.conftest import TINY

    doc = {"name": name, "storage": str(folder / "sweeps"), "base": str(ROOT / "configs" / "quickstart.yaml"),
           "overrides": [*TINY, f"train.epochs={EPOCHS}"],
           "space": {"loss.temperature": {"loguniform": [0.05, 1.0]}, "loss.contrastive": {"choice": ["sc", "psc"]}},
           "scheduler": {"kind": "none"}, "trials": TRIALS, "concurrency": 2}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _snapshot(root: Path) -> dict[str, tuple[str, float]]:
    """Every store file of a trial with a final row: name -> (sha256, mtime)."""
    trials = read_dataset(root, "trials") if (root / "trials").is_dir() else None
    final = {r["trial_id"] for r in (trials.to_pylist() if trials is not None else []) if r["status"] in FINISHED}
    out = {}
    for table in ("trials", "epochs", "per_class"):
        for path in sorted((root / table).glob("*.parquet")) if (root / table).is_dir() else []:
            if path.name.split("-epoch-")[0].removesuffix(".parquet") in final:
                out[f"{table}/{path.name}"] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime)
    return out


@dataclass
class Outcome:
    moment: str
    how: str
    killed_rc: int | None = None
    resume_rc: int | None = None
    lost: int = 0
    duplicated: int = 0
    rerun: int = 0
    epoch_dups: int = 0
    incomplete: int = 0  # trials without all their epochs after the resume
    statuses: dict = field(default_factory=dict)
    first_stderr: str = ""
    resume_stderr: str = ""
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return (self.resume_rc == 0 and not (self.lost or self.duplicated or self.rerun or self.epoch_dups
                                             or self.incomplete) and self.statuses == {"completed": TRIALS})

    def line(self) -> str:
        return (f"| {self.moment} | {self.how} | {self.killed_rc} | {self.lost} | {self.duplicated} | {self.rerun} | "
                f"{self.epoch_dups} | {self.incomplete} | {self.resume_rc} | {self.seconds:.0f} |")


def _wait(predicate, proc, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(0.2)
    return False


def _signal(proc: subprocess.Popen, how: str) -> None:
    if how == "int1":
        proc.send_signal(signal.SIGINT)
    elif how == "int2":
        proc.send_signal(signal.SIGINT)
        time.sleep(0.7)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    elif how == "term":
        proc.send_signal(signal.SIGTERM)
    elif how == "kill_driver":
        proc.send_signal(signal.SIGKILL)
    elif how == "kill_group":
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        raise ValueError(how)


def _reap(proc: subprocess.Popen, timeout: float = 120) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


def run_case(folder: Path, moment: str, how: str, num_cpus: int = 2) -> Outcome:
    """One kill and one ``--resume`` in ``folder``; the outcome counts what went wrong."""
    started = time.time()
    out = Outcome(moment, how)
    name = f"k-{moment}-{how}".replace("_", "-")
    spec = write_spec(folder, name)
    root = folder / "sweeps" / name / "results"
    marker = folder / f"{name}.marker"
    sweep = [*CLI, "sweep", str(spec), "--num-cpus", str(num_cpus)]
    pause = {} if moment in ("mid_trial", "export") else {"HYBRIDLT_FAULT_PAUSE": f"{moment}:{marker}",
                                                          "HYBRIDLT_FAULT_PAUSE_S": "6"}
    if moment == "export":  # the sweep runs to the end; the export is what gets killed
        done = subprocess.run(sweep, cwd=folder, env=_env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        cmd = [*CLI, "export-best", str(root), "-o", str(folder / f"{name}-best.yaml")]
        pause = {"HYBRIDLT_FAULT_PAUSE": f"export:{marker}", "HYBRIDLT_FAULT_PAUSE_S": "6"}
    else:
        cmd = sweep
    # SIGINT as a terminal delivers it: a runner started in the background (SIGINT ignored, which
    # children inherit and Python then honours) must not turn the Ctrl-C cases into no-ops
    proc = subprocess.Popen(cmd, cwd=folder, env=_env(**pause), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    if moment == "mid_trial":
        reached = _wait(lambda: len(list((root / "epochs").glob("*.parquet"))) >= 2, proc, 300)
    else:
        reached = _wait(marker.exists, proc, 300)
    if not reached or proc.poll() is not None:
        _reap(proc, 5)
        raise AssertionError(f"{moment}: the driver never reached the moment (rc {proc.returncode}): "
                             f"{proc.stderr.read()[-2000:]}")
    _signal(proc, how)
    out.killed_rc = _reap(proc)
    out.first_stderr = proc.stderr.read()
    if how == "kill_driver":  # the driver's own Ray lives on without it until it notices; then clean up
        time.sleep(2)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    before = _snapshot(root)
    resumed = subprocess.run([*sweep, "--resume"], cwd=folder, env=_env(), capture_output=True, text=True,
                             timeout=600)
    out.resume_rc, out.resume_stderr = resumed.returncode, resumed.stderr
    if moment == "export":
        again = subprocess.run(cmd, cwd=folder, env=_env(), capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-2000:]
        assert yaml.safe_load((folder / f"{name}-best.yaml").read_text())  # a whole file, not a torn one
    after = _snapshot(root)
    out.rerun = sum(1 for k, v in before.items() if after.get(k) != v)
    trials = read_dataset(root, "trials")
    rows = trials.to_pylist() if trials is not None else []
    ids = [r["trial_id"] for r in rows]
    out.duplicated = len(ids) - len(set(ids))
    out.lost = max(0, TRIALS - len(set(ids)))
    out.statuses = {}
    for r in rows:
        out.statuses[r["status"]] = out.statuses.get(r["status"], 0) + 1
    epochs = read_dataset(root, "epochs")
    pairs = [(r["trial_id"], r["epoch"]) for r in (epochs.to_pylist() if epochs is not None else [])]
    out.epoch_dups = len(pairs) - len(set(pairs))
    planned = list(range(1, EPOCHS + 1))
    out.incomplete = sum(1 for t in set(ids) if sorted(e for i, e in set(pairs) if i == t) != planned)
    extra = {i for i, _ in pairs} - set(ids)  # epochs of a trial that has no row: a trial the resume lost
    out.lost += len(extra)
    out.seconds = time.time() - started
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moments", nargs="+", default=list(MOMENTS), choices=MOMENTS)
    parser.add_argument("--signals", nargs="+", default=list(SIGNALS), choices=SIGNALS)
    parser.add_argument("--diagonal", action="store_true", help="only the cases make test runs")
    args = parser.parse_args(argv)
    if args.diagonal:
        from tests.sweep.test_kill_matrix import CASES

        cases = list(CASES)
    else:
        cases = [(m, h) for m in args.moments for h in args.signals]
    print("| moment | signal | driver rc | trials lost | duplicated | re-run | epoch rows duplicated | "
          "incomplete | resume rc | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for moment, how in cases:
            folder = Path(tmp) / f"{moment}-{how}"
            folder.mkdir()
            try:
                out = run_case(folder, moment, how)
            except AssertionError as exc:
                print(f"| {moment} | {how} | could not run: {str(exc).splitlines()[0][:120]} |", flush=True)
                bad += 1
                continue
            bad += not out.clean
            print(out.line(), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
