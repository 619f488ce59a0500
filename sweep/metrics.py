"""The metric catalogue: every per-epoch metric the trainer reports, described once.

Spec validation (which metrics can be an objective), the store's schemas (the ``epochs`` columns and
the trials table's ``final_``/``best_`` columns), the CLI tables, ``ablate`` and the dashboard all read
this list. Adding a headline metric is one ``Metric(...)`` line here plus the trainer computing it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str  # the key in the trainer's metrics dict and the ``epochs`` column
    label: str  # short, for table headers and legends
    unit: str  # "%" (stored as a fraction, shown x100), "" (plain number), "s", "img/s"
    group: str  # "accuracy", "loss", "schedule", "time"
    direction: str | None  # "max", "min", or None when no direction is better
    final: bool  # the trials table gets ``final_<name>`` and ``best_<name>``; an objective may name it
    description: str = ""

    def show(self, value) -> str:
        """The value as a person reads it: percent for accuracies, '-' when missing."""
        if value is None or value != value:
            return "-"
        return f"{100 * value:.2f}" if self.unit == "%" else f"{value:.4g}"


CATALOGUE: tuple[Metric, ...] = (
    Metric("acc", "overall", "%", "accuracy", "max", True, "top-1 accuracy over the whole test set"),
    Metric("balanced_acc", "balanced", "%", "accuracy", "max", True, "mean of the per-class accuracies"),
    Metric("many_acc", "many", "%", "accuracy", "max", True, "mean accuracy of the many-shot classes"),
    Metric("medium_acc", "medium", "%", "accuracy", "max", True, "mean accuracy of the medium-shot classes"),
    Metric("few_acc", "few", "%", "accuracy", "max", True, "mean accuracy of the few-shot classes"),
    Metric("loss", "loss", "", "loss", "min", True, "Eq. 1, mean over the epoch's steps"),
    Metric("con_loss", "contrastive loss", "", "loss", "min", True, "the feature-branch loss"),
    Metric("ce_loss", "classifier loss", "", "loss", "min", True, "the classifier-branch loss"),
    Metric("alpha", "alpha", "", "schedule", None, False, "the curriculum weight of Eq. 1"),
    Metric("lr", "lr", "", "schedule", None, False, "learning rate at the epoch's end"),
    Metric("epoch_time_s", "epoch time", "s", "time", "min", False, "training seconds of the epoch"),
    Metric("eval_time_s", "eval time", "s", "time", "min", False, "evaluation seconds of the epoch"),
    Metric("images_per_s", "images/s", "img/s", "time", "max", False, "training images per second"),
    Metric("data_wait_s", "data wait", "s", "time", "min", False, "seconds the steps waited for batches"),
)
METRICS: dict[str, Metric] = {m.name: m for m in CATALOGUE}

ACCURACY_METRICS = tuple(m.name for m in CATALOGUE if m.group == "accuracy")  # overall, balanced, many, medium, few
FINAL_METRICS = tuple(m.name for m in CATALOGUE if m.final)  # trials' final_/best_ columns; valid objectives
EPOCH_METRICS = tuple(m.name for m in CATALOGUE)  # the epochs table's metric columns, in order


def metric(name: str) -> Metric:
    """The catalogue entry of ``name``; an unknown name says what is allowed."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; allowed: {', '.join(FINAL_METRICS)}") from None
