"""The sweep driver: a local (or cluster) Ray, Ray Tune + OptunaSearch + ASHA, resume, the store.

``run_sweep(spec, base, resume)`` starts Ray when none is running, runs (or restores) the Tune
experiment ``<storage>/<name>``, writes one ``trials`` row per finished trial from the driver,
and returns the trials table. Ray schedules everything: no queue or pool of our own.
"""

from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path

import pyarrow as pa

from hybridlt.errors import InputError
from hybridlt.sweep.config import ConfigError, get_path
from hybridlt.sweep.results import (
    ResultsWriter,
    has_trial_row,
    param_type,
    pareto_front,
    read_dataset,
    trial_summary,
    trials_schema,
)
from hybridlt.sweep.spec import SweepSpec
from hybridlt.sweep.store import Location, epoch_prefix
from hybridlt.sweep.trial import TrialContext, trial_main

TRIAL_RESOURCE = "hybridlt_trial"


def reuse_actors() -> bool:
    """Whether Tune runs trial after trial in the same actor process (on unless
    ``HYBRIDLT_REUSE_ACTORS=0``, which the benchmarks use to measure the difference)."""
    return os.environ.get("HYBRIDLT_REUSE_ACTORS", "1") != "0"


def process_age_s() -> float:
    """Seconds since this process started (its imports and setup so far)."""
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


def _pct(value) -> str:
    return "-" if value is None or value != value else f"{100 * value:.2f}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray(address: str | None, trial_slots: int, num_cpus: int | None = None, log_to_driver: bool = False) -> None:
    """Connect to ``address`` or start a local Ray with its dashboard on loopback (needed for the
    State API that cleans up a stopped trial's placement group) and the trial-slot resource.

    ``log_to_driver``: show the workers' output here. Off for sweeps, where every trial that ASHA
    stops prints Ray's SIGTERM traceback; their logs stay in Ray's session folder.
    """
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=log_to_driver)
        return
    port = _free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=True, dashboard_host="127.0.0.1",
             dashboard_port=port, resources={TRIAL_RESOURCE: trial_slots}, log_to_driver=log_to_driver,
             runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}},
             configure_logging=False)
    private_secrets()


def private_secrets() -> None:
    """Ray 2.60 writes its cluster token ``~/.ray/auth_token`` mode 0644: make it readable by its owner only."""
    token = Path.home() / ".ray" / "auth_token"
    try:
        if token.is_file() and token.stat().st_mode & 0o077:
            token.chmod(0o600)
    except OSError:
        pass  # not ours to change (another user's home, read-only): Ray still runs


def total_trials(spec: SweepSpec, param_space: dict | None = None) -> int:
    """Trials the sweep runs: ``trials`` samples, or for a grid ``trials`` repeats of every combination."""
    if spec.search.algorithm != "grid" and not param_space:
        return spec.trials
    sizes = [len(v) for v in (param_space or {}).values()] + [len(p.values) for p in spec.space.values()]
    return spec.trials * math.prod(sizes)


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


class DefineByRun:
    """Optuna's define-by-run space: parameters in spec order, each only where its ``when`` holds.

    A class rather than a closure: OptunaSearch pickles it into the experiment state for resume.
    """

    def __init__(self, spec: SweepSpec, base_raw: dict):
        self.space = {path: p.model_dump() for path, p in spec.space.items()}
        self.kinds = {path: p.kind for path, p in spec.space.items()}
        self.base_raw = base_raw

    def lookup(self, path: str, sampled: dict):
        return sampled[path] if path in sampled else get_path(self.base_raw, path)

    def __call__(self, trial) -> None:
        sampled: dict = {}
        for path, p in self.space.items():
            if not all(self.lookup(c, sampled) in (v if isinstance(v, list) else [v]) for c, v in p["when"].items()):
                continue
            kind = self.kinds[path]
            if kind == "loguniform":
                sampled[path] = trial.suggest_float(path, *p[kind], log=True)
            elif kind == "uniform":
                sampled[path] = trial.suggest_float(path, *p[kind])
            elif kind == "int":
                sampled[path] = trial.suggest_int(path, *p[kind], log=p["log"])
            else:
                sampled[path] = trial.suggest_categorical(path, p[kind])
        return None


def _error_line(trial) -> str:
    """The last line of a failed trial's error ("NonFiniteLossError: loss is not finite at ...")."""
    text = None
    path = trial.error_file  # written locally before the storage copy that get_error reads
    if path and Path(path).is_file():
        text = Path(path).read_text(errors="replace")
    text = text or str(trial.get_error() or "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "unknown error")[:2000]


class StoreCallback:
    """Driver-side Tune callback: one ``trials`` row per finished trial, and the terminal progress."""

    def __init__(self, spec: SweepSpec, base, variants: dict | None, root: Location, schema: pa.Schema, show=None):
        self.spec, self.base, self.variants, self.root, self.schema = spec, base, variants, root, schema
        self.show = show
        self.counts = {"completed": 0, "stopped": 0, "failed": 0}
        self.started: set[str] = set()
        self.best: tuple[float, str] | None = None
        self.total: int | None = None  # planned trials, set by the driver
        self.first_trial_at: float | None = None  # time.time() when the first trial started

    def progress_line(self) -> str:
        """Trials done / running / stopped early / failed, and the best so far (accuracies in %)."""
        metric = self.spec.objective.metrics[0]
        done = sum(self.counts.values())
        best = f"best {metric} {_pct(self.best[0])}% ({self.best[1]})" if self.best else "best -"
        return (f"trials {done}/{self.total or '?'} done, {len(self.started)} running: {self.counts['completed']} "
                f"completed, {self.counts['stopped']} stopped early, {self.counts['failed']} failed; {best}")

    def __getstate__(self):
        return {**self.__dict__, "show": None}  # the console display is not pickled into tuner.pkl

    def row(self, trial_id: str, config: dict, status: str, error: str | None, wall: float | None) -> dict:
        epochs = read_dataset(self.root, "epochs", name_prefix=epoch_prefix(trial_id))  # this trial's files only
        rows = sorted(epochs.to_pylist(), key=lambda r: r["epoch"]) if epochs is not None else []
        summary = trial_summary(rows)
        from hybridlt.sweep.spec import apply_params

        planned = self.base.train.epochs
        try:
            trial_cfg = apply_params(self.base, config, self.variants)
            config_yaml, planned = trial_cfg.to_yaml(), trial_cfg.train.epochs  # epochs may be searched
        except Exception:  # a config that failed validation still gets its row, with the error
            config_yaml = None
        if status == "completed" and summary["epochs_done"] < planned:
            status = "stopped"
        out = {"trial_id": trial_id, "status": status, "error": error, "epochs_planned": planned,
               "wall_time_s": wall, "config_yaml": config_yaml, **summary}
        out.update({f"param.{k}": v for k, v in config.items()})
        return out

    def write(self, trial_id: str, config: dict, last_result: dict | None, status: str,
              error: str | None = None) -> None:
        if has_trial_row(self.root, trial_id):
            return  # written once, when the trial first finished
        wall = (last_result or {}).get("time_total_s")
        row = self.row(trial_id, dict(config), status, error, wall)
        ResultsWriter(self.root).trial(row, self.schema)
        self.counts[row["status"]] += 1
        self.started.discard(trial_id)
        metric = self.spec.objective.metrics[0]
        value = row.get(f"final_{metric}")
        if value is not None and not math.isnan(value):
            sign = 1 if self.spec.objective.modes[0] == "max" else -1
            if self.best is None or sign * value > sign * self.best[0]:
                self.best = (value, trial_id)
        if self.show:
            self.show(self)


def make_callback_class():
    from ray.tune import Callback

    class _TuneStoreCallback(StoreCallback, Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            self.started.add(trial.trial_id)  # shown with the next finished trial
            if self.first_trial_at is None:
                self.first_trial_at = time.time()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.write(trial.trial_id, trial.config, trial.last_result, "completed")

        def on_trial_error(self, iteration, trials, trial, **info):
            self.write(trial.trial_id, trial.config, trial.last_result, "failed", _error_line(trial))

    return _TuneStoreCallback


def run_sweep(spec: SweepSpec, base, resume: bool = False, address: str | None = None, show=None,
              num_cpus: int | None = None, variants: dict | None = None, param_space: dict | None = None,
              callbacks: list | None = None, timings: dict | None = None):
    """Run or resume the sweep; returns the ``trials`` table (pyarrow) and the wall time of
    ``Tuner.fit`` when it ends.

    ``timings`` (a dict, optional) receives the sweep's fixed costs in seconds: ``imports_s``
    (process start to Ray and Tune imported), ``ray_start_s`` (``ray.init`` or connecting),
    ``tune_start_s`` (``fit`` called to the first trial running) and ``fit_s``.
    """
    import ray
    from ray import tune

    timings = timings if timings is not None else {}
    timings["imports_s"] = process_age_s()

    storage = spec.storage_uri
    exp_dir = f"{storage.rstrip('/')}/{spec.name}"
    root = Location.of(f"{exp_dir}/results")
    can_restore = tune.Tuner.can_restore(exp_dir)
    if resume and not can_restore:
        raise SweepError(f"--resume: no sweep to resume at {exp_dir}; start it without --resume")
    if not resume and (can_restore or root.exists()):
        raise SweepError(f"sweep {spec.name!r} already exists at {exp_dir}; pass --resume to continue it "
                         f"or choose another name (--set name=...)")

    # A trial that finished before a driver crash returns at once on resume, reporting nothing.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # Tune's newer console output prints an experiment banner whatever the verbosity; the older one is
    # silent at verbose=0, so the sweep's own progress lines (or nothing, from the API) are all that shows.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    r = spec.resources
    use_train = r.use_train if r.use_train is not None else r.workers > 1
    slots = spec.concurrency or total_trials(spec, param_space)
    ray_started = time.perf_counter()
    start_ray(address, slots, num_cpus)
    timings["ray_start_s"] = time.perf_counter() - ray_started
    total = ray.cluster_resources()
    concurrency = concurrency_for(spec, total.get("CPU", 0), total.get("GPU", 0), total_trials(spec, param_space),
                                  on_cluster=bool(address))

    types = {path: param_type(p.values) for path, p in spec.space.items()}
    if param_space:
        types.update({path: param_type(values) for path, values in param_space.items()})
    schema = trials_schema(types)
    writer = ResultsWriter(root)
    if not resume:
        writer.sweep_yaml(spec.model_dump(mode="json"), base.model_dump(mode="json"), types)

    ctx = TrialContext(base=base, results_root=root, train_storage=f"{exp_dir}/train", use_train=use_train,
                       workers=r.workers, cpus_per_worker=r.cpus_per_worker, gpus_per_worker=r.gpus_per_worker,
                       max_failures=r.max_failures, variants=variants,
                       milestones=_milestones(spec, base))
    if use_train:  # the trial function only waits on its workers: a slot, no CPU (RAY.md: CPU deadlock)
        resources = {"CPU": 0, TRIAL_RESOURCE: 1}
    else:
        resources = {"CPU": r.cpus_per_worker, **({"GPU": r.gpus_per_worker} if r.gpus_per_worker else {})}
    trainable = tune.with_resources(tune.with_parameters(trial_main, ctx=ctx), resources)

    callback = make_callback_class()(spec, base, variants, root, schema, show)
    callback.total = total_trials(spec, param_space)
    if resume:
        tuner = tune.Tuner.restore(exp_dir, trainable, resume_unfinished=True, resume_errored=False)
        for cb in _restored_callbacks(tuner):  # the restored callback lost its display when it was pickled
            cb.show, cb.total, cb.first_trial_at = show, callback.total, None
    else:
        from hybridlt.sweep.tracking import tracker_callbacks  # MLflow / TensorBoard / W&B, when asked for

        tuner = _new_tuner(spec, base, trainable, [callback, *tracker_callbacks(spec, root), *(callbacks or [])],
                           concurrency, storage, param_space)
    started = time.time()
    grid = tuner.fit()
    timings["fit_s"] = time.time() - started
    first = callback.first_trial_at or next((cb.first_trial_at for cb in _restored_callbacks(tuner)
                                             if cb.first_trial_at), None)
    timings["tune_start_s"] = first - started if first else math.nan
    _reconcile(grid, callback)
    if spec.search.algorithm != "grid" and not param_space:
        from hybridlt.sweep.study import close_orphans

        close_orphans(spec)
    if len(spec.objective.metrics) > 1:
        _write_pareto(spec, root)
    trials = read_dataset(root, "trials")
    return trials, time.time() - started


def _restored_callbacks(tuner) -> list:
    """The store callbacks inside a restored Tuner (unpickled from its experiment state)."""
    local = getattr(tuner, "_local_tuner", None)
    callbacks = local._run_config.callbacks if local is not None else None
    return [cb for cb in callbacks or [] if isinstance(cb, StoreCallback)]


def _milestones(spec: SweepSpec, base) -> tuple[int, ...]:
    """The epochs every trial evaluates and checkpoints whatever ``train.eval_every`` says."""
    if spec.scheduler.kind != "asha":
        return ()
    max_t = _max_epochs(spec, base)
    return rung_epochs(min(spec.scheduler.grace_period, base.train.epochs), spec.scheduler.reduction_factor, max_t)


def _new_tuner(spec, base, trainable, callbacks, concurrency, storage, param_space):
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from hybridlt.sweep.search import SCHEDULERS, SEARCH_ALGORITHMS

    metrics, modes = spec.objective.metrics, spec.objective.modes
    scheduler = SCHEDULERS.build(spec.scheduler.kind, metric=metrics[0], mode=modes[0], max_t=_max_epochs(spec, base),
                                 grace_period=min(spec.scheduler.grace_period, base.train.epochs),
                                 reduction_factor=spec.scheduler.reduction_factor)
    sampler = SEARCH_ALGORITHMS.build(spec.search.algorithm, seed=spec.search.seed)
    if sampler is None or param_space:
        space = {path: tune.grid_search(list(values)) for path, values in (param_space or {}).items()}
        for path, p in spec.space.items():
            space[path] = tune.grid_search(list(p.values))
        search_alg, num_samples = None, spec.trials
    else:
        from hybridlt.sweep.study import make_searcher

        multi = len(metrics) > 1
        search = make_searcher(spec, DefineByRun(spec, base.model_dump(mode="json")),  # the study in a database
                               metrics if multi else metrics[0], modes if multi else modes[0], sampler)
        search_alg, space, num_samples = ConcurrencyLimiter(search, max_concurrent=concurrency), None, spec.trials
    tune_config = tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
                                  max_concurrent_trials=None if search_alg else concurrency,
                                  time_budget_s=spec.time_budget_s,
                                  # one process runs trial after trial: no ~5 CPU-s of imports per
                                  # trial, no empty slot while it starts (sweep.isolation resets it)
                                  reuse_actors=reuse_actors())
    if scheduler is None and len(metrics) == 1:
        tune_config.metric, tune_config.mode = metrics[0], modes[0]
    run_config = tune.RunConfig(name=spec.name, storage_path=storage, verbose=0, callbacks=callbacks,
                                failure_config=tune.FailureConfig(max_failures=0))
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config)


def _max_epochs(spec: SweepSpec, base) -> int:
    """The most epochs a trial can run: the base's, or the top of a searched ``train.epochs``."""
    param = spec.space.get("train.epochs")
    return int(max(param.values)) if param is not None else base.train.epochs


def _reconcile(grid, callback: StoreCallback) -> None:
    """Write the rows a killed driver never wrote (``write`` skips trials that have theirs)."""
    for result in grid:
        if not result.metrics:
            continue
        trial_id = result.metrics.get("trial_id") or Path(result.path).name
        status = "failed" if result.error else "completed"
        error = str(result.error).strip().splitlines()[-1] if result.error else None
        callback.write(trial_id, result.config or {}, result.metrics, status, error)


def _write_pareto(spec: SweepSpec, root: Location) -> None:
    from hybridlt.sweep.store import PARETO_FILE, write_table_atomic

    trials = read_dataset(root, "trials")
    if trials is None:
        return
    rows = trials.to_pylist()
    cols = [f"final_{m}" for m in spec.objective.metrics]
    front = set(pareto_front([(r["trial_id"], [r[c] for c in cols]) for r in rows], spec.objective.modes))
    table = pa.Table.from_pylist([{"trial_id": r["trial_id"], **{c: r[c] for c in cols}} for r in rows
                                  if r["trial_id"] in front])
    write_table_atomic(table, root / PARETO_FILE)
