"""Ray's MLflow logger plus each trial's per-class accuracy as one table (``tracking.mlflow``).

A module of its own so that only a sweep that asks for MLflow imports it (see ``sweep.tracking``).
"""

from __future__ import annotations

from ray.air.integrations.mlflow import MLflowLoggerCallback

from hybridlt.sweep.tracking import last_per_class


class MLflowCallback(MLflowLoggerCallback):
    """Ray's MLflow logger plus, at each trial's end, its per-class accuracy as one MLflow table."""

    def __init__(self, tracking_uri: str, experiment_name: str, results_root, tags: dict | None = None):
        super().__init__(tracking_uri=tracking_uri, experiment_name=experiment_name, tags=tags)
        self.results_root = results_root

    def log_trial_end(self, trial, failed: bool = False):
        run_id = self._trial_runs.get(trial)
        if run_id is not None:
            frame = last_per_class(self.results_root, trial.trial_id)
            if frame is not None:
                self.mlflow_util._mlflow.MlflowClient(self.tracking_uri).log_table(
                    run_id, data=frame.drop(columns=["trial_id"]), artifact_file="per_class.json")
        super().log_trial_end(trial, failed)
