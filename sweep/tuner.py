"""The sweep driver: a local (or cluster) Ray, Ray Tune + OptunaSearch + ASHA, resume, the store.

``run_sweep(spec, base, resume)`` takes the sweep's lock, starts Ray when none is running, plans
from the store what is left (``ledger.plan``: on a first run, everything), and runs that as one
Tune experiment ``<sweep>/tune/leg-NNN``: trials that must continue keep their ids, epochs and
checkpoints. The driver writes one ``trials`` row per trial that ends; a trial still running when
the driver is stopped gets an ``interrupted`` row, replaced when ``--resume`` finishes it. Ray
schedules everything: no queue or pool of our own.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import yaml

from hybridlt.errors import InputError
from hybridlt.sweep.config import ConfigError
from hybridlt.sweep.faults import pause_at
from hybridlt.sweep.ledger import Plan, plan, total_trials, trial_row, write_row
from hybridlt.sweep.lock import SweepLock
from hybridlt.sweep.results import FINISHED, ResultsWriter, param_type, pareto_front, read_dataset, trials_schema
from hybridlt.sweep.spec import SweepSpec
from hybridlt.sweep.store import Location, writable_folder
from hybridlt.sweep.trial import (
    FAILED_KEY,
    STORAGE_ERRNOS,
    STORE_ID,
    StorageFullError,
    TrialContext,
    storage_error,
    trial_main,
)

TRIAL_RESOURCE = "hybridlt_trial"
RECORDED = ("name", "base", "overrides", "space", "objective", "search", "scheduler", "trials")


def reuse_actors() -> bool:
    """Whether Tune runs trial after trial in the same actor process (on unless
    ``HYBRIDLT_REUSE_ACTORS=0``, which the benchmarks use to measure the difference)."""
    return os.environ.get("HYBRIDLT_REUSE_ACTORS", "1") != "0"


def process_age_s() -> float:
    """Seconds since this process started (its imports and setup so far).

    On Linux from the kernel's own clock: /proc/self/stat's start time and CLOCK_BOOTTIME, both
    counted from boot, to 1/CLK_TCK s. psutil's ``create_time()`` adds the boot time, which the
    kernel gives in whole seconds, to wall-clock time: up to a second off (0.8 s measured here).
    """
    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil

        return time.time() - psutil.Process().create_time()
    except Exception:  # psutil ships with ray[default]; without it the imports are not counted
        return math.nan


def rung_epochs(grace_period: int, reduction_factor: float, max_t: int) -> tuple[int, ...]:
    """ASHA's milestones (one bracket, as Ray builds them): grace * rf^k up to ``max_t``."""
    if grace_period < 1 or max_t < grace_period:
        return ()
    count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
    return tuple(sorted({int(grace_period * reduction_factor**k) for k in range(count)}))


class SweepError(InputError, RuntimeError):
    """The sweep cannot start or resume as asked; the message says why and what to do."""


class SweepInterrupted(KeyboardInterrupt):
    """The driver was stopped (Ctrl-C, SIGTERM): what finished is saved, ``--resume`` continues."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.message, self.signum = message, signum


def _pct(value) -> str:
    return "-" if value is None or value != value else f"{100 * value:.2f}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray(address: str | None, trial_slots: int, num_cpus: int | None = None, log_to_driver: bool = False,
              dashboard: bool = True) -> None:
    """Connect to ``address`` or start a local Ray with the trial-slot resource.

    ``dashboard``: start Ray's dashboard, on loopback, for the State API that cleans up a stopped
    Train trial's worker placement group (RAY.md). A sweep whose trials train in their own process
    passes False: one server fewer, a faster start (``bench/sweep_vs_optuna.py``). A Ray this
    process started without it is restarted with it when a later call needs it.

    ``log_to_driver``: show the workers' output here. Off for sweeps, where every trial that ASHA
    stops prints Ray's SIGTERM traceback; their logs stay in Ray's session folder.
    """
    import ray

    if ray.is_initialized():
        gcs = ray.get_runtime_context().gcs_address
        if not (dashboard and _STATE_API.get(gcs, "") is None):
            return
        ray.shutdown()  # started here without the dashboard this call needs
    pause_at("start_ray")
    if address:
        connect_ray(address, log_to_driver)
        return
    port = _free_port() if dashboard else None
    url = f"http://127.0.0.1:{port}" if dashboard else None
    extra = dict(dashboard_host="127.0.0.1", dashboard_port=port,
                 runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": url}}) if dashboard else {}
    with loopback_node(), own_state_api(url):
        # "local": a new Ray of our own even where one runs already (`ray start`, RAY_ADDRESS), which
        # ray.init would otherwise join, refusing num_cpus with a ValueError; --address joins one
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=dashboard,
                 resources={TRIAL_RESOURCE: trial_slots}, log_to_driver=log_to_driver,
                 configure_logging=False, _node_ip_address="127.0.0.1", **extra)
    _STATE_API[ray.get_runtime_context().gcs_address] = url
    private_secrets()


class RayAddressError(InputError, ConnectionError):
    """``--address`` names no Ray cluster this machine can reach."""


ADDRESS_PROBE_S = 5.0


def connect_ray(address: str, log_to_driver: bool = False) -> None:
    """``ray.init(address=...)``, or one line naming ``--address`` when nothing answers there.

    A ``host:port`` is tried with a plain TCP connection first: Ray waits minutes on a port where
    nothing listens (over 120 s on 127.0.0.1:1 here) before it gives up with a traceback."""
    import ray

    host, sep, port = address.rpartition(":")
    hint = ("start one with 'ray start --head' (README: Running on a cluster), or leave --address out to start a "
            "local Ray")
    if sep and host and port.isdigit() and "://" not in address:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=ADDRESS_PROBE_S).close()
        except OSError as exc:
            why = exc.strerror or (f"no answer in {ADDRESS_PROBE_S:.0f} s" if isinstance(exc, TimeoutError)
                                   else str(exc) or type(exc).__name__)
            raise RayAddressError(f"--address {address}: no Ray cluster answers there ({why}); {hint}") from None
    try:
        ray.init(address=address, log_to_driver=log_to_driver)
    except (ConnectionError, ValueError) as exc:  # "auto" with no Ray running, a malformed address
        said = " ".join(str(exc).split()) or type(exc).__name__
        first = said.split(". ")[0].rstrip(".")  # Ray's first sentence: the rest is about RAY_ADDRESS
        if address != "auto" and "RAY_AUTH_MODE" not in os.environ and _ray_token_available():
            # Ray sends its token to a cluster it finds itself ("auto"), never to one named by
            # address unless told: a `ray start --head` cluster with token auth then refuses it
            hint = ("if the cluster uses Ray's token auth (a `ray start --head` here does when a token "
                    "exists), use --address auto, or export RAY_AUTH_MODE=token with the cluster's token")
        raise RayAddressError(f"--address {address}: {first}; {hint}") from None


def _ray_token_file() -> Path:
    """Where Ray keeps its cluster token when ``RAY_AUTH_TOKEN_PATH`` does not say: ``~/.ray/auth_token``."""
    return Path.home() / ".ray" / "auth_token"


def _ray_token_available() -> bool:
    """Whether Ray's token auth has a token here: ``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH``
    names, or the default file."""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or Path(path or _ray_token_file()).is_file()


def stop_ray() -> None:
    """``ray.shutdown()``, less its wait on the autoscaler monitor of a Ray this process started.

    Ray stops its processes one after another, each given a second to exit on SIGTERM before a
    SIGKILL; the monitor never makes it (``ray.shutdown`` 1.42 s, 1.01 s of it the monitor, on this
    2-core machine), so it is killed first. A local Ray has nothing for it to scale or keep; a
    Ray reached with ``--address`` is not this process's to stop, and nothing of it is touched.
    """
    import ray
    from ray._private import ray_constants, worker

    node = worker._global_node
    if node is not None and node.head:
        for info in node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []):
            try:
                info.process.kill()
                info.process.wait(timeout=1)
            except Exception:  # already gone, or not ours to reap: ray.shutdown sees to it
                pass
    ray.shutdown()


_STATE_API: dict[str, str | None] = {}  # GCS address of a Ray start_ray started -> its dashboard's URL (None: none)


@contextmanager
def own_state_api(url: str | None = None):
    """Point Ray's State API at the dashboard of the Ray this process started, for the duration only.

    Tune cleans up a stopped trial's placement group through the State API, which reads
    ``RAY_API_SERVER_ADDRESS`` before any address it is given (and two Rays on one host can answer
    for each other). Set for the block and restored after it, so that after a sweep this process's
    own State API calls (a notebook's, a test's ``list_nodes(address=...)``) go where they say.
    With ``url`` None: the URL start_ray recorded for the Ray connected now, if it started it.
    """
    if url is None:
        import ray

        url = _STATE_API.get(ray.get_runtime_context().gcs_address) if ray.is_initialized() else None
    if url is None:
        yield
        return
    before = os.environ.get("RAY_API_SERVER_ADDRESS")
    os.environ["RAY_API_SERVER_ADDRESS"] = url
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_API_SERVER_ADDRESS", None)
        else:
            os.environ["RAY_API_SERVER_ADDRESS"] = before


@contextmanager
def loopback_node():
    """Let the local Ray's node address be 127.0.0.1, so that its servers listen on loopback only.

    Ray binds gcs_server, the raylet, the workers, the driver, its agents and metrics endpoints to
    loopback exactly when the node's address is loopback, but replaces 127.0.0.1 (even an explicit
    ``_node_ip_address``) by the machine's address unless ``ray_constants.ENABLE_RAY_CLUSTER`` is
    off (Ray reads it once, from ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``, when imported). Off only
    around this ``ray.init``: the variable is not exported, so a ``ray start --address`` run from
    here still joins clusters. tests/sweep/test_network.py fails if a Ray upgrade changes this.
    """
    from ray._private import ray_constants

    flag = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = flag


def private_secrets() -> None:
    """Ray 2.60 writes its cluster token ``~/.ray/auth_token`` mode 0644: make it readable by its owner only."""
    token = _ray_token_file()
    try:
        if token.is_file() and token.stat().st_mode & 0o077:
            token.chmod(0o600)
    except OSError:
        pass  # not ours to change (another user's home, read-only): Ray still runs


def private_sweep_folder(spec: SweepSpec, exp_dir: str | Path) -> bool:
    """Make the sweep's folder its owner's only (0700) when ``search.storage`` holds a password: Tune
    pickles the searcher, and with it the study's URL, into ``tuner.pkl`` and ``searcher-state-*.pkl``
    there, with the umask's mode. Returns whether it did. On an object store the bucket's policy decides."""
    if spec.search.algorithm == "grid" or not spec.search.storage:
        return False
    from sqlalchemy.engine import make_url

    if not make_url(spec.search.storage).password:
        return False
    Path(exp_dir).chmod(0o700)
    return True


def concurrency_for(spec: SweepSpec, cpus: float, gpus: float, trials: int | None = None,
                    on_cluster: bool = False) -> int:
    """Trials that fit at once, so that no trial waits on another's resources.

    ``on_cluster`` (``--address``): the spec's ``concurrency``, when given, is the plan and the
    cluster's resources now are not a bound. An autoscaling cluster adds the nodes that waiting
    trials ask for (a head with no CPUs starts with none to offer); trials beyond what it can
    ever hold wait in Ray's queue. Without ``concurrency`` the resources present now decide.
    """
    r = spec.resources
    if on_cluster and spec.concurrency:
        return min(spec.concurrency, trials or spec.trials)
    fits = [math.floor(cpus / (r.workers * r.cpus_per_worker))]
    if r.gpus_per_worker > 0:
        fits.append(math.floor(gpus / (r.workers * r.gpus_per_worker) + 1e-9))
    limit = min(fits)
    if limit < 1:
        raise ConfigError(f"resources: a trial needs {r.workers} x {r.cpus_per_worker} CPUs and "
                          f"{r.workers} x {r.gpus_per_worker} GPUs but the cluster has {cpus} CPUs, {gpus} GPUs"
                          + ("; on an autoscaling cluster whose nodes start on demand set concurrency: N (the "
                             "trials its largest size holds)" if on_cluster else ""))
    return min(limit, spec.concurrency or limit, trials or spec.trials)


def _store_id(trial) -> str:
    return (trial.config or {}).get(STORE_ID) or trial.trial_id


def _params(trial) -> dict:
    return {k: v for k, v in (trial.config or {}).items() if k != STORE_ID}


def _is_storage_error(text: str) -> bool:
    return "StorageFullError" in text or "[Errno 28]" in text or "No space left" in text


class StoreCallback:
    """Driver-side Tune callback: the ``trials`` rows, the terminal progress, the stop flags."""

    def __init__(self, spec: SweepSpec, base, root: Location, schema: pa.Schema, show=None, plan_: Plan | None = None):
        self.spec, self.base, self.root, self.schema, self.show = spec, base, root, schema, show
        self.counts = {s: 0 for s in FINISHED}
        for row in (plan_.rows.values() if plan_ else []):  # trials finished before this driver started count too
            if row["status"] in self.counts:
                self.counts[row["status"]] += 1
        self.started: dict[str, dict] = {}  # store id -> params, while running in this driver
        self.best: tuple[float, str] | None = None
        for row in (plan_.rows.values() if plan_ else []):
            self._consider(row)
        self.total: int | None = None
        self.interrupting = False  # set by the driver's signal handler: ends are interruptions
        self.storage_error: StorageFullError | None = None
        self.first_trial_at: float | None = None  # time.time() when the first trial started

    def _consider(self, row: dict) -> None:
        metric = self.spec.objective.metrics[0]
        value = row.get(f"final_{metric}")
        if row["status"] != "completed" or value is None or math.isnan(value):
            return  # "best so far" ranks completed trials only
        sign = 1 if self.spec.objective.modes[0] == "max" else -1
        if self.best is None or (-sign * value, row["trial_id"]) < (-sign * self.best[0], self.best[1]):
            self.best = (value, row["trial_id"])  # a tie: the smaller trial id, as rank_trials and export-best

    def progress_line(self) -> str:
        """Trials done / running / stopped early / failed, and the best completed one (accuracies in %)."""
        metric = self.spec.objective.metrics[0]
        done = sum(self.counts.values())
        best = f"best completed {metric} {_pct(self.best[0])}% ({self.best[1]})" if self.best else "best -"
        return (f"trials {done}/{self.total or '?'} done, {len(self.started)} running: {self.counts['completed']} "
                f"completed, {self.counts['stopped_early']} stopped early, {self.counts['failed']} failed; {best}")

    def __getstate__(self):
        return {**self.__dict__, "show": None, "storage_error": None}

    def write(self, trial_id: str, params: dict, last_result: dict | None, status: str,
              error: str | None = None) -> None:
        """The trial's row; a final row (completed, stopped early, failed) is never rewritten."""
        existing = self.root / "trials" / f"{trial_id}.parquet"
        if status != "interrupted" and existing.exists():
            old = read_dataset(self.root, "trials", name_prefix=f"{trial_id}.")
            if old is not None and old.num_rows and old.column("status")[0].as_py() in FINISHED:
                self.started.pop(trial_id, None)
                return
        wall = (last_result or {}).get("time_total_s")
        try:
            row = trial_row(self.root, self.base, trial_id, params, status, error, wall)
            pause_at("write_row")
            write_row(self.root, row, self.schema)
        except OSError as exc:
            if exc.errno not in STORAGE_ERRNOS:
                raise
            self.storage_error = self.storage_error or storage_error(exc, existing)
            self.interrupting = True
            return
        self.started.pop(trial_id, None)
        if row["status"] in self.counts:
            self.counts[row["status"]] += 1
        self._consider(row)
        if self.show:
            self.show(self)

    def trial_ended(self, trial, status: str, error: str | None = None) -> None:
        trial_id = _store_id(trial)
        if error and _is_storage_error(error):
            self.storage_error = self.storage_error or StorageFullError(error.split("StorageFullError: ")[-1])
            self.interrupting = True
        if self.interrupting:
            return  # stopped because the driver is stopping: written as interrupted at the end
        if status == "failed" and self.show:
            print(f"trial {trial_id} failed: {(error or 'unknown error')[:300]}", file=sys.stderr, flush=True)
        self.write(trial_id, _params(trial), trial.last_result, status, error)


def make_callback_class():
    from ray.tune import Callback

    class _TuneStoreCallback(StoreCallback, Callback):
        def setup(self, **info):
            one_line_ray_errors()

        def on_trial_start(self, iteration, trials, trial, **info):
            self.started[_store_id(trial)] = _params(trial)  # shown with the next finished trial
            if self.first_trial_at is None:
                self.first_trial_at = time.time()

        def on_trial_complete(self, iteration, trials, trial, **info):
            reason = (trial.last_result or {}).get(FAILED_KEY)
            self.trial_ended(trial, "failed" if reason else "completed", reason)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.trial_ended(trial, "failed", _error_line(trial))

    return _TuneStoreCallback


class _OneLineRayErrors(logging.Filter):
    """Ray logs each failed trial, and each failed sync of its experiment state, with the whole
    traceback (tens of lines of Ray internals each); keep one line: the message and the last line
    of the error. A failed trial's full traceback stays in its ``error.txt`` and its reason in the
    store's ``error`` column; Ray's own logs keep everything."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and record.name.startswith("ray"):
            exc = record.exc_info[1]
            lines = [line for line in str(exc).splitlines() if line.strip()]
            record.msg = f"{record.getMessage()}: {lines[-1].strip() if lines else type(exc).__name__}"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def one_line_ray_errors() -> None:
    """Put ``_OneLineRayErrors`` on every handler Ray's loggers write through (Tune adds its own
    when the experiment starts, so this runs again from the callback's ``setup``)."""
    loggers = [logging.getLogger()] + [lg for name, lg in logging.Logger.manager.loggerDict.items()
                                       if name.startswith("ray") and isinstance(lg, logging.Logger)]
    handlers = {h for lg in loggers for h in lg.handlers} | ({logging.lastResort} if logging.lastResort else set())
    for handler in handlers:  # lastResort: where Tune's records go once Ray's handler is gone
        if not any(isinstance(f, _OneLineRayErrors) for f in handler.filters):
            handler.addFilter(_OneLineRayErrors())


def make_stopper(flag: threading.Event):
    """A Tune stopper that ends the experiment once ``flag`` is set (the flag stays out of tuner.pkl)."""
    from ray.tune import Stopper

    class _Stop(Stopper):
        def __call__(self, trial_id, result):
            return False

        def stop_all(self):
            return getattr(self, "flag", None) is not None and self.flag.is_set()

        def __getstate__(self):
            return {}  # pickled into tuner.pkl, never restored

    stop = _Stop()
    stop.flag = flag
    return stop


class _Signals:
    """While Tune runs: the first Ctrl-C or SIGTERM stops the sweep cleanly (running trials become
    ``interrupted``); a second Ctrl-C exits at once (every store write is atomic, nothing is torn)."""

    def __init__(self, callback: StoreCallback, flag: threading.Event, resume_command: str):
        self.callback, self.flag, self.resume_command = callback, flag, resume_command
        self.signum: int | None = None
        self.saved: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)

    def handle(self, signum, frame) -> None:
        if self.signum is not None:
            print(f"\ninterrupted again: exiting now; the store is intact. Continue with:\n  {self.resume_command}",
                  file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signum = signum
        self.callback.interrupting = True
        self.flag.set()
        print(f"\nstopping the sweep (press Ctrl-C again to exit at once); continue it later with:\n"
              f"  {self.resume_command}", file=sys.stderr, flush=True)


def _check_same_spec(spec: SweepSpec, root: Location) -> None:
    """--resume continues the sweep that was started: the recorded spec must match the given one."""
    doc = yaml.safe_load((root / "sweep.yaml").read_bytes()) or {}
    recorded, given = doc.get("spec") or {}, spec.model_dump(mode="json")
    for key in RECORDED:
        if key in recorded and recorded[key] != given.get(key):
            raise SweepError(f"--resume: {key} differs from the one sweep {spec.name!r} was started with "
                             f"({recorded[key]!r} -> {given.get(key)!r}); resume with the same spec and --set")


def _history(spec: SweepSpec, root: Location, rows: dict[str, dict]) -> list:
    """(trial id, params, objective values) of every finished trial, for a study that lost them."""
    out = []
    for trial_id, row in rows.items():
        if row["status"] not in FINISHED:
            continue
        params = {k.removeprefix("param."): v for k, v in row.items() if k.startswith("param.") and v is not None}
        values = None
        if row["status"] != "failed":
            values = []
            for m in spec.objective.metrics:
                v = row.get(f"final_{m}")
                if v is None:
                    epochs = read_dataset(root, "epochs", name_prefix=f"{trial_id}-epoch-")
                    last = max(epochs.to_pylist(), key=lambda r: r["epoch"]) if epochs is not None else {}
                    v = last.get(m)
                values.append(v)
        out.append((trial_id, params, values))
    return out


def _say(show, text: str) -> None:
    print(text, file=sys.stderr, flush=True) if show else None


def run_sweep(spec: SweepSpec, base, resume: bool = False, address: str | None = None, show=None,
              num_cpus: int | None = None, callbacks: list | None = None, resume_command: str | None = None,
              timings: dict | None = None):
    """Run or resume the sweep; returns the ``trials`` table (pyarrow) and the wall time when it ends.

    Raises ``SweepInterrupted`` when stopped by a signal and ``StorageFullError`` when the store
    cannot be written; in both cases ``--resume`` continues it.

    ``timings`` (a dict, optional) receives the sweep's fixed costs in seconds: ``imports_s``
    (process start to here), ``ray_start_s`` (``ray.init`` or connecting), ``tune_start_s``
    (``fit`` called to the first trial running) and ``fit_s``.
    """
    timings = timings if timings is not None else {}
    timings["imports_s"] = process_age_s()
    storage = spec.storage_uri
    exp_dir = f"{storage.rstrip('/')}/{spec.name}"
    root = Location.of(f"{exp_dir}/results")
    started_at = time.time()
    resume_command = resume_command or f"the same command with --resume (sweep {spec.name!r})"
    try:  # a sweep refused by its data check leaves no folder it created
        new_folder = not resume and not Location.of(exp_dir).exists()
    except OSError:
        new_folder = False  # a name the filesystem refuses: writable_folder says so below
    if root.is_local:  # a file, a read-only folder: said now, not as a traceback after Ray has started
        writable_folder(storage.removeprefix("file://"), "storage", create=not resume)
    if resume and not (root / "sweep.yaml").exists():
        old = " (it was written by an older hybridlt, whose sweeps cannot be resumed)" if (
            Location.of(exp_dir) / "tuner.pkl").exists() else ""
        raise SweepError(f"--resume: no sweep to resume at {exp_dir}{old}; start it without --resume")
    if not resume and ((root / "sweep.yaml").exists() or root.exists()):
        raise SweepError(f"sweep {spec.name!r} already exists at {exp_dir}; pass --resume to continue it "
                         f"or choose another name (--set name=...)")
    if root.is_local:
        writable_folder(exp_dir.removeprefix("file://"), "storage", create=not resume)
        private_sweep_folder(spec, exp_dir.removeprefix("file://"))
    try:
        return _run_locked(spec, base, resume, address, show, num_cpus, callbacks, resume_command, timings,
                           exp_dir, root, storage, started_at)
    except (DataCheckError, RayAddressError):
        if not resume:  # nothing ran: the corrected command starts it afresh, not "already exists"
            gone = Location.of(exp_dir) if new_folder else root
            try:
                gone.fs.delete_dir(gone.path)
            except OSError:
                pass
        raise


def _run_locked(spec, base, resume, address, show, num_cpus, callbacks, resume_command, timings, exp_dir, root,
                storage, started_at):
    lock = SweepLock(exp_dir, spec.name, say=lambda m: print(m, file=sys.stderr, flush=True))
    lock.acquire()
    try:
        types = {path: param_type(p.values) for path, p in spec.space.items()}
        schema = trials_schema(types)
        try:
            if resume:
                _check_same_spec(spec, root)
            else:
                ResultsWriter(root).sweep_yaml(spec.model_dump(mode="json"), base.model_dump(mode="json"), types)
            todo = plan(spec, base, root, schema)
        except OSError as exc:
            if exc.errno in STORAGE_ERRNOS:
                raise storage_error(exc, root) from None
            raise
        if resume:
            _report_plan(todo, root, exp_dir, show)
        if todo.unfinished or todo.fresh:
            _run_tune(spec, base, todo, root, exp_dir, schema, address, show, num_cpus, callbacks, resume_command,
                      timings)
        trials = read_dataset(root, "trials")
        rows = {r["trial_id"]: r for r in trials.to_pylist()} if trials is not None else {}
        if spec.search.algorithm != "grid":
            from hybridlt.sweep.searcher import optuna_study
            from hybridlt.sweep.study import close_orphans, open_storage, study_url

            optuna_study(spec, _history(spec, root, rows), open_storage(study_url(spec)))  # none untold
            close_orphans(spec)  # every planned trial ended: a study trial still RUNNING never will
        if len(spec.objective.metrics) > 1:
            _write_pareto(spec, root, trials)
    finally:
        lock.release()
    return trials, time.time() - started_at


def _report_plan(todo: Plan, root: Location, exp_dir: str, show) -> None:
    """Say what --resume does: trials kept, continued (from which checkpoint) and still to start."""
    _say(show, f"resume: {len(todo.finished)} trials finished ({len(todo.completed_now)} of them recorded now), "
               f"{len(todo.unfinished)} to continue, {todo.fresh} to start")
    for trial_id, _, done in todo.unfinished:
        ckpts = Location.of(f"{exp_dir}/train/{trial_id}")
        names = sorted(loc.name for loc in _dirs(ckpts) if loc.name.startswith("checkpoint_"))
        where = f"from its newest readable checkpoint ({names[-1]})" if names else "from the start (no checkpoint)"
        _say(show, f"  {trial_id}: {done} epochs recorded; continues {where}")


def _dirs(loc: Location) -> list[Location]:
    import pyarrow.fs as pafs

    if not loc.is_dir():
        return []
    return [Location(loc.fs, i.path) for i in loc.fs.get_file_info(pafs.FileSelector(loc.path))
            if i.type == pafs.FileType.Directory]


class DataCheckError(ConfigError):
    """Data no trial could read, found by the driver before any trial started."""


def check_data(spec: SweepSpec, base) -> None:
    """Load once, here, the data the trials will train on: the base config's, or each variant's where
    the spec has variants, so that a folder, list or file no trial could read is one error before
    any trial starts (the image-folder cache this fills is the one the trials read). Skipped when a
    searched parameter sets ``data.*``: the trials' data is known only as they are drawn."""
    from hybridlt.sweep.build import load_dataset
    from hybridlt.sweep.config import apply_overrides, validate_run_config

    if any(key.startswith("data.") for key in spec.space):
        return
    variant = spec.space.get("variant")
    configs = ([validate_run_config(apply_overrides(base.model_dump(mode="json"), list(sets)), f"variants.{name}")
                for name, sets in variant.variants.items()] if variant is not None and variant.variants else [base])
    sections = {yaml.safe_dump(c.data.model_dump(mode="json")): c.data for c in configs}
    for data in sections.values():
        try:
            load_dataset(data)
        except InputError as exc:
            raise DataCheckError(str(exc)) from None


def _prepare_into(out: dict, spec: SweepSpec, base, todo: Plan, exp_dir: str, root: Location,
                  check: bool) -> None:
    """What the driver needs besides Ray, done while Ray starts (which mostly waits on its own
    processes): Tune's and Optuna's imports, the data check (``check``: for a local Ray only; on a
    cluster the nodes, not this machine, hold the data), the searcher with its study, then what
    Tune's telemetry would import inside ``fit`` (``warm_tune_telemetry``). Fills ``out`` with
    ``leg`` and ``searcher``, or ``error`` for the driver's thread to raise."""
    try:
        from ray import tune  # noqa: F401  imported here, on the core Ray's start leaves free
        from ray.tune.schedulers import ASHAScheduler  # noqa: F401

        from hybridlt.sweep.searcher import make_searcher

        if check:
            check_data(spec, base)  # data no trial could read: one line before any trial
        leg = 1 + sum(1 for d in _dirs(Location.of(f"{exp_dir}/tune")) if d.name.startswith("leg-"))
        out["searcher"] = make_searcher(spec, base.model_dump(mode="json"),
                                        [(t, p) for t, p, _ in todo.unfinished], todo.fresh_grid, todo.fresh,
                                        None, _history(spec, root, todo.rows), seed=spec.search.seed + leg - 1)
        out["leg"] = leg
        warm_tune_telemetry()  # last: a data error above is reported without waiting for it
    except BaseException as exc:  # raised again in the driver's thread
        out["error"] = exc


def warm_tune_telemetry() -> None:
    """Import now what ``Tuner.fit`` would import before it starts the first trial.

    Tune's usage telemetry (``ray.air._internal.usage.tag_callbacks``, run by every ``fit`` given a
    callback) imports Ray's MLflow, W&B, Comet and Aim integrations to tell its own callbacks from
    ours, and with them ``mlflow`` and ``wandb`` where installed: 1.2 s of the 1.4 s between
    ``fit`` and the first trial process here (py-spy of the driver). Called from the preparation
    thread, that time overlaps Ray's start instead. A Ray without the function warms nothing.
    """
    try:
        from ray.air._internal.usage import _count_callbacks
    except ImportError:
        return
    _count_callbacks([])


def _run_tune(spec, base, todo: Plan, root, exp_dir, schema, address, show, num_cpus, callbacks, resume_command,
              timings):
    import ray

    # A trial that finished before a driver crash returns at once on resume, reporting nothing.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours (_Signals) handles Ctrl-C
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no experiment tables on stdout
    # Tune's CSV and TensorBoard loggers write every result of every trial again, on the driver,
    # while the trial waits for the driver to take its report (8 ms instead of 11 ms a report,
    # measured): the store holds every epoch. _new_tuner keeps the JSON logger (result.json, which
    # Tune's ResultGrid reads back); tracking.tensorboard asks for event files.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    r = spec.resources
    use_train = r.use_train if r.use_train is not None else r.workers > 1
    n_trials = len(todo.unfinished) + todo.fresh
    ray_started = time.perf_counter()
    dashboard = use_train or os.environ.get("HYBRIDLT_RAY_DASHBOARD") == "1"  # 1: always (benchmarks)
    # a daemon thread, which a Ctrl-C does not wait for, prepares the rest while Ray starts here
    prepared: dict = {}
    prepare = threading.Thread(target=_prepare_into, args=(prepared, spec, base, todo, exp_dir, root, not address),
                               name="hybridlt-prepare", daemon=True)
    prepare.start()
    try:
        start_ray(address, spec.concurrency or n_trials, num_cpus, dashboard=dashboard)
    except RayAddressError:
        prepare.join()  # it writes the study into the sweep's folder, which run_sweep now removes
        raise
    timings["ray_start_s"] = time.perf_counter() - ray_started
    prepare.join()
    if "error" in prepared:
        raise prepared["error"]
    from ray import tune

    pause_at("before_trials")
    cluster = ray.cluster_resources()
    concurrency = concurrency_for(spec, cluster.get("CPU", 0), cluster.get("GPU", 0), n_trials,
                                  on_cluster=bool(address))

    ctx = TrialContext(base=base, results_root=root, train_storage=f"{exp_dir}/train", use_train=use_train,
                       workers=r.workers, cpus_per_worker=r.cpus_per_worker, gpus_per_worker=r.gpus_per_worker,
                       max_failures=r.max_failures, space=spec.space, milestones=_milestones(spec, base))
    if use_train:  # the trial function only waits on its workers: a slot, no CPU (RAY.md: CPU deadlock)
        resources = {"CPU": 0, TRIAL_RESOURCE: 1}
    else:
        resources = {"CPU": r.cpus_per_worker, **({"GPU": r.gpus_per_worker} if r.gpus_per_worker else {})}
    trainable = tune.with_resources(tune.with_parameters(trial_main, ctx=ctx), resources)

    callback = make_callback_class()(spec, base, root, schema, show, todo)
    callback.total = total_trials(spec)
    leg, searcher = prepared["leg"], prepared["searcher"]
    searcher.concurrency = concurrency
    flag = threading.Event()
    from hybridlt.sweep.tracking import tracker_callbacks  # MLflow / TensorBoard / W&B, when asked for

    tuner = _new_tuner(spec, base, trainable, [callback, *tracker_callbacks(spec, root), *(callbacks or [])],
                       n_trials, exp_dir, leg, searcher, make_stopper(flag))
    started = time.time()
    with _Signals(callback, flag, resume_command) as signals, own_state_api(), pending_trials(concurrency):
        try:
            tuner.fit()
        except Exception:
            if callback.storage_error is None:
                raise
    timings["fit_s"] = time.time() - started
    timings["tune_start_s"] = callback.first_trial_at - started if callback.first_trial_at else math.nan
    # every trial this driver started and that has no final row: interrupted (the driver stopped)
    for trial_id, params in list(callback.started.items()):
        callback.write(trial_id, params, None, "interrupted",
                       "the driver stopped before the trial ended; --resume continues it")
    if callback.storage_error is not None:
        raise callback.storage_error
    if signals.signum is not None:
        raise SweepInterrupted(f"sweep {spec.name!r} interrupted: finished trials and every completed epoch are "
                               f"saved; continue with:\n  {resume_command}", signals.signum)


@contextmanager
def pending_trials(concurrency: int):
    """Let Tune stage as many trials as may run at once (``TUNE_MAX_PENDING_TRIALS_PG``), for the duration.

    Tune stages one trial at a time for a searcher it does not see wrapped in a ``ConcurrencyLimiter``;
    ours limits itself, so each slot's trial process was asked for only once the previous one had
    started (imported torch): on N slots, N start-ups in a row. A value the user exported is kept."""
    key = "TUNE_MAX_PENDING_TRIALS_PG"
    before = os.environ.get(key)
    if before is None:
        os.environ[key] = str(max(1, concurrency))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)


def _new_tuner(spec, base, trainable, callbacks, n_trials, exp_dir, leg, searcher, stopper):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    metrics, modes = spec.objective.metrics, spec.objective.modes
    scheduler = None
    if spec.scheduler.kind == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", metric=metrics[0], mode=modes[0], max_t=_max_epochs(spec, base),
                                  grace_period=min(spec.scheduler.grace_period, base.train.epochs),
                                  reduction_factor=spec.scheduler.reduction_factor)
    tune_config = tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=n_trials,
                                  time_budget_s=spec.time_budget_s,
                                  # one process runs trial after trial: no ~5 CPU-s of imports per
                                  # trial, no empty slot while it starts (sweep.isolation resets it)
                                  reuse_actors=reuse_actors())
    from ray.tune.logger import JsonLoggerCallback

    callbacks = [*callbacks, *([] if any(isinstance(c, JsonLoggerCallback) for c in callbacks)
                               else [JsonLoggerCallback()])]
    run_config = tune.RunConfig(name=f"leg-{leg:03d}", storage_path=f"{exp_dir}/tune", verbose=0,
                                callbacks=callbacks, stop=stopper,
                                failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures))
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


def _milestones(spec: SweepSpec, base) -> tuple[int, ...]:
    """The epochs every trial evaluates and checkpoints whatever ``train.eval_every`` says."""
    if spec.scheduler.kind != "asha":
        return ()
    max_t = _max_epochs(spec, base)
    return rung_epochs(min(spec.scheduler.grace_period, base.train.epochs), spec.scheduler.reduction_factor, max_t)


def _error_line(trial) -> str:
    """The last line of a failed trial's error ("NonFiniteLossError: loss is not finite at ...")."""
    text = None
    path = trial.error_file  # written locally before the storage copy that get_error reads
    if path and Path(path).is_file():
        text = Path(path).read_text(errors="replace")
    text = text or str(trial.get_error() or "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "unknown error")[:2000]


def _max_epochs(spec: SweepSpec, base) -> int:
    """The most epochs a trial can run: the base's, or the top of a searched ``train.epochs``."""
    param = spec.space.get("train.epochs")
    return int(max(param.values)) if param is not None else base.train.epochs


def _write_pareto(spec: SweepSpec, root: Location, trials: pa.Table | None) -> None:
    from hybridlt.sweep.store import write_table_atomic

    if trials is None:
        return
    rows = trials.to_pylist()
    cols = [f"final_{m}" for m in spec.objective.metrics]
    front = set(pareto_front([(r["trial_id"], [r[c] for c in cols]) for r in rows], spec.objective.modes))
    table = pa.Table.from_pylist([{"trial_id": r["trial_id"], **{c: r[c] for c in cols}} for r in rows
                                  if r["trial_id"] in front])
    write_table_atomic(table, root / "pareto.parquet")
