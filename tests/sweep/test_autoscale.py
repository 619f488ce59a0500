"""Sweeps on an autoscaling cluster: how many trials run at once when the nodes come on demand."""

from __future__ import annotations

import pytest


def test_a_cluster_plans_from_the_spec_concurrency(tmp_path):
    """With --address an explicit concurrency is the plan (nodes come on demand); without one the
    resources present now decide, and a head with no CPUs says what to set."""
    from hybridlt.sweep.config import ConfigError
    from hybridlt.sweep.spec import load_sweep_spec
    from hybridlt.sweep.tuner import concurrency_for
    from tests.sweep.test_spec import _spec

    spec, _ = load_sweep_spec(_spec(tmp_path, concurrency=3, trials=8))
    assert concurrency_for(spec, cpus=0, gpus=0, trials=8, on_cluster=True) == 3
    assert concurrency_for(spec, cpus=0, gpus=0, trials=2, on_cluster=True) == 2
    spec, _ = load_sweep_spec(_spec(tmp_path, concurrency=None, trials=8))
    assert concurrency_for(spec, cpus=2, gpus=0, trials=8, on_cluster=True) == 2
    with pytest.raises(ConfigError, match="set concurrency"):
        concurrency_for(spec, cpus=0, gpus=0, trials=8, on_cluster=True)
    with pytest.raises(ConfigError, match="resources"):  # a local Ray: no autoscaler to wait for
        concurrency_for(spec, cpus=0, gpus=0, trials=8)
