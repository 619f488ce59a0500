"""The search algorithm Tune runs for every sweep: first the trials a resume continues (under
their own ids, with their recorded parameters), then new ones (the remaining grid combinations,
or Optuna's suggestions), bounded by the concurrency. Ray Tune schedules everything.

The Optuna study lives in a database (``sweep/study.py``: an SQLite file in the sweep's folder by
default), so a resumed TPE search knows the whole history, not only what one driver saw. A trial
a resume continues finishes its own study trial (found by its ``ray_trial_id``), so the study
holds each store trial once. A study that was lost (a resume on another machine of a sweep on
object storage) is refilled from the store's finished trials (``optuna_study``).
"""

from __future__ import annotations

import math

from hybridlt.sweep.spec import SweepSpec
from hybridlt.sweep.trial import FAILED_KEY, STORE_ID


class DefineByRun:
    """Optuna's define-by-run space: parameters in spec order, each only where its ``when`` holds.

    A class rather than a closure: it must pickle (Ray ships the searcher around).
    """

    def __init__(self, spec: SweepSpec, base_raw: dict):
        self.space = {path: p.model_dump() for path, p in spec.space.items()}
        self.kinds = {path: p.kind for path, p in spec.space.items()}
        self.base_raw = base_raw

    def lookup(self, path: str, sampled: dict):
        if path in sampled:
            return sampled[path]
        node = self.base_raw
        for part in path.split("."):
            node = node[part]
        return node

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


def distributions(spec: SweepSpec) -> dict:
    """Optuna's distribution of every parameter of ``spec`` (to tell it about earlier trials)."""
    import optuna.distributions as od

    out = {}
    for path, p in spec.space.items():
        if p.kind in ("loguniform", "uniform"):
            out[path] = od.FloatDistribution(*p.values, log=p.kind == "loguniform")
        elif p.kind == "int":
            out[path] = od.IntDistribution(*p.values, log=p.log)
        else:
            out[path] = od.CategoricalDistribution(p.values)
    return out


def _directions(spec: SweepSpec) -> list[str]:
    return ["maximize" if m == "max" else "minimize" for m in spec.objective.modes]


def optuna_study(spec: SweepSpec, history: list[tuple[dict, list[float] | None]], storage=None):
    """The sweep's study in ``storage`` (default: in memory), holding every trial of ``history``
    ((trial id, params, objective values or None if failed): the store's finished trials). Each one
    the study was never told (a lost study; a driver killed after a trial's row was written, before
    the study heard of it) finishes its own RUNNING study trial or is added (``finish_continued``)."""
    import optuna

    from hybridlt.sweep.study import TRIAL_ATTR

    storage = storage if storage is not None else optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name=spec.name, directions=_directions(spec),
                                load_if_exists=True)
    told = {t.user_attrs.get(TRIAL_ATTR) for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    for trial_id, params, values in history:
        if trial_id not in told:
            bad = values is None or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values)
            finish_continued(study, spec, trial_id, params, None if bad else values)
    return storage


def make_searcher(spec: SweepSpec, base_raw: dict, pending: list[tuple[str, dict]], fresh_grid: list[dict] | None,
                  fresh: int, concurrency: int | None, history: list, seed: int):
    """The Tune search algorithm of one driver run (see the module docstring). ``concurrency``
    may be left None and set later as ``.concurrency`` (the driver builds the searcher while Ray
    starts, before Ray says how many trials fit), but before Tune first asks for a trial."""
    from ray.tune.search import Searcher

    metrics, modes = spec.objective.metrics, spec.objective.modes
    multi = len(metrics) > 1

    class SweepSearcher(Searcher):
        def __init__(self):
            super().__init__(metric=metrics if multi else metrics[0], mode=modes if multi else modes[0])
            self.pending = list(pending)
            self.grid = None if fresh_grid is None else list(fresh_grid)
            self.fresh_left = fresh
            self.live: dict[str, str] = {}  # Tune trial id -> "fresh" | "continued"
            self.continued_params: dict[str, dict] = {}
            self.concurrency = concurrency
            self.inner = None
            if fresh_grid is None and (fresh > 0 or pending):
                self.inner = self._optuna()

        def _optuna(self):
            import optuna

            from hybridlt.sweep.study import StudySearch, open_storage, study_url

            optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "using an existing study" lines per leg
            sampler = (optuna.samplers.TPESampler(seed=seed) if spec.search.algorithm == "tpe"
                       else optuna.samplers.RandomSampler(seed=seed))
            storage = optuna_study(spec, history, open_storage(study_url(spec)))
            return StudySearch(space=DefineByRun(spec, base_raw), metric=self.metric, mode=self.mode,
                               sampler=sampler, storage=storage, study_name=spec.name)

        def set_search_properties(self, metric, mode, config, **spec_kw):
            return True  # metric and mode are the spec's, set above

        def suggest(self, trial_id: str):
            if self.concurrency is None:
                raise RuntimeError("SweepSearcher.concurrency was never set")
            if len(self.live) >= self.concurrency:
                return None
            if self.pending:
                store_id, params = self.pending.pop(0)
                self.live[trial_id] = "continued"
                self.continued_params[trial_id] = (store_id, params)
                return {**params, STORE_ID: store_id}
            if self.fresh_left <= 0:
                return Searcher.FINISHED
            if self.grid is not None:
                params = self.grid.pop(0)
            else:
                params = self.inner.suggest(trial_id)
                if params is None:
                    return None
            self.fresh_left -= 1
            self.live[trial_id] = "fresh"
            return {**params, STORE_ID: trial_id}

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if FAILED_KEY in result:
                return  # no metric: the trial failed (its on_trial_complete says so)
            if self.inner is not None and self.live.get(trial_id) == "fresh":
                self.inner.on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
            kind = self.live.pop(trial_id, None)
            if self.inner is None or kind is None:
                return
            if result and FAILED_KEY in result:
                result, error = None, True
            if kind == "fresh":
                self.inner.on_trial_complete(trial_id, result, error)
                return
            store_id, params = self.continued_params.pop(trial_id)
            values = [result.get(m) for m in metrics] if result else None
            ok = values is not None and all(v is not None and not math.isnan(v) for v in values)
            finish_continued(self.inner._ot_study, spec, store_id, params, values if ok else None)

        def __getstate__(self):
            return {}  # Tune pickles its Tuner (tuner.pkl); this driver run's state is never restored

        def __setstate__(self, state):
            self.__dict__.update(state)

        def save_to_dir(self, *args, **kwargs):
            pass  # never restored: the store, not Tune's snapshot, is what --resume reads

        def save(self, checkpoint_path: str):
            pass

        def restore(self, checkpoint_path: str):
            pass

    return SweepSearcher()


def finish_continued(study, spec: SweepSpec, store_id: str, params: dict, values: list[float] | None) -> None:
    """Record a continued trial's end in the study: its own study trial (still RUNNING since the
    driver that started it stopped) gets the values; without one, a finished trial is added."""
    import optuna
    from optuna.trial import TrialState

    from hybridlt.sweep.study import TRIAL_ATTR

    state = TrialState.COMPLETE if values is not None else TrialState.FAIL
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get(TRIAL_ATTR) == store_id:
            storage.set_trial_state_values(t._trial_id, state, values)
            return
    dists = distributions(spec)
    known = {k: v for k, v in params.items() if k in dists}
    try:
        study.add_trial(optuna.trial.create_trial(params=known, distributions={k: dists[k] for k in known},
                                                  values=values, state=state, user_attrs={TRIAL_ATTR: store_id}))
    except ValueError:
        pass  # a value outside today's space: Optuna cannot hold it
