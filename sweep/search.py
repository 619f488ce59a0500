"""The search algorithms (``search.algorithm``) and trial schedulers (``scheduler.kind``) by name.

A search algorithm builds the Optuna sampler behind Ray Tune's ``OptunaSearch`` (``grid`` builds
none: Tune's own grid search runs the space); a scheduler builds the Tune scheduler (``none``: every
trial runs all its epochs). Each builder takes the spec fields it needs.
"""

from __future__ import annotations

from hybridlt.registry import Registry

SEARCH_ALGORITHMS = Registry("search.algorithm")
SCHEDULERS = Registry("scheduler.kind")


@SEARCH_ALGORITHMS.register("tpe")
def tpe_sampler(seed: int):
    """Optuna's tree-structured Parzen estimator (seeded)."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


@SEARCH_ALGORITHMS.register("random")
def random_sampler(seed: int):
    """Independent uniform draws (seeded)."""
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


@SEARCH_ALGORITHMS.register("grid")
def grid_search() -> None:
    """Every combination of the ``grid``/``choice`` values, through Tune's grid search."""
    return None


@SCHEDULERS.register("asha")
def asha_scheduler(metric: str, mode: str, max_t: int, grace_period: int, reduction_factor: float):
    """Asynchronous successive halving on the 1-based ``epoch`` (so resumed trials count right)."""
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="epoch", metric=metric, mode=mode, max_t=max_t, grace_period=grace_period,
                         reduction_factor=reduction_factor)


@SCHEDULERS.register("none")
def no_scheduler() -> None:
    """Every trial runs all its epochs."""
    return None
