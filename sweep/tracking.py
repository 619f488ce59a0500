"""Experiment trackers for a sweep, all off by default: the spec's ``tracking:`` section as Ray Tune
logger callbacks, run on the driver.

- ``tracking.mlflow: URI``: Ray's ``MLflowLoggerCallback``, one MLflow run per trial in the
  experiment ``tracking.project`` (default: the sweep name): the trial's parameters, and every
  epoch's scalars (acc, balanced / many / medium / few acc, losses, alpha, lr) with the epoch as
  step. When the trial ends, its per-class accuracy at the last reported epoch goes to the run as
  one table artifact, ``per_class.json`` (MLflow's ``log_table``: class index and name, training
  count, accuracy), rather than as thousands of loose metric keys.
- ``tracking.tensorboard: true``: Tune's ``TBXLoggerCallback`` writes TensorBoard event files to
  each trial's folder, ``<storage>/<name>/tune/leg-NNN/<trial folder>/events.out.tfevents.*``
  (``tensorboard --logdir <storage>/<name>``). Tune would add it by itself whenever
  ``tensorboardX`` is installed; a sweep turns Tune's automatic CSV and TensorBoard loggers off
  (they rewrite every result on the driver while the trial waits), so the flag is what writes them,
  and an error without the package. Tune's ``result.json`` per trial is still written.
- ``tracking.wandb: offline | online``: Ray's ``WandbLoggerCallback`` (a logging actor per trial),
  project ``tracking.project``, group = the sweep name. Offline runs land in
  ``<storage>/<name>/wandb/`` for a local sweep (the driver's working folder for an object-store
  one); ``wandb sync`` uploads them later. Online needs ``WANDB_API_KEY``.

Each tracker's package, and Ray's integration with it, is imported only when the spec asks for it
(Ray's MLflow integration imports mlflow: 0.75 s on the driver of every sweep otherwise).
"""

from __future__ import annotations

import os
from pathlib import Path

from hybridlt.errors import InputError


def last_per_class(root, trial_id: str):
    """The trial's ``per_class`` rows at its last reported epoch, most training images first (pandas)."""
    from hybridlt.sweep.results import read_dataset

    table = read_dataset(root, "per_class", name_prefix=f"{trial_id}-epoch-")
    if table is None or table.num_rows == 0:
        return None
    frame = table.to_pandas()
    frame = frame[frame.epoch == frame.epoch.max()]
    return frame.sort_values(["train_count", "class_index"], ascending=[False, True]).reset_index(drop=True)


def wandb_dir(spec) -> str:
    """Where offline W&B runs land: the sweep folder when it is local, else the driver's working folder."""
    storage = spec.storage_uri
    return str(Path(storage) / spec.name) if "://" not in storage else os.getcwd()


def tracker_callbacks(spec, results_root) -> list:
    """The Tune callbacks ``spec.tracking`` asks for (none by default)."""
    t = spec.tracking
    project = t.project or spec.name
    callbacks: list = []
    if t.mlflow:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise InputError("tracking.mlflow: the mlflow package is not installed "
                             "(pip install 'hybridlt[tracking]')") from None
        from hybridlt.sweep.mlflow_callback import MLflowCallback

        callbacks.append(MLflowCallback(t.mlflow, project, results_root, tags={"hybridlt_sweep": spec.name}))
    if t.tensorboard:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise InputError("tracking.tensorboard: the tensorboardX package is not installed "
                             "(pip install 'hybridlt[tracking]')") from None
        from ray.tune.logger import TBXLoggerCallback

        callbacks.append(TBXLoggerCallback())
    if t.wandb != "off":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise InputError(f"tracking.wandb: {t.wandb!r} needs the wandb package (pip install wandb)") from None
        from ray.air.integrations.wandb import WandbLoggerCallback

        if t.wandb == "offline":
            os.environ["WANDB_MODE"] = "offline"  # read by Ray's callback on the driver: no API key needed
        where = wandb_dir(spec)
        Path(where).mkdir(parents=True, exist_ok=True)
        callbacks.append(WandbLoggerCallback(project=project, group=spec.name, mode=t.wandb, dir=where))
    return callbacks
