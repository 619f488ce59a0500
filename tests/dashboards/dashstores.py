"""Small results stores for the dashboard tests, written with the store's own writer API.

``known_store``: three trials with hand-picked numbers, so queries and figures have exact answers.
``trained_store``: a tiny sweep trained for real in this process (digits-LT, resnet8, 2 epochs),
its rows written exactly as a Ray sweep writes them (``ResultsWriter``, ``record_trained`` and ``StoreCallback.write``),
without the ~40-60 s of starting Ray on a 2-core machine.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import yaml

from hybridlt.sweep.results import ResultsWriter, param_type, trial_summary, trials_schema
from hybridlt.sweep.store import Location

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["a", "b", "c", "d"]
COUNTS = [5, 50, 200, 20]  # rank order by count: c (200), b (50), d (20), a (5)
PARAM_TYPES = {"loss.temperature": pa.float64(), "loss.contrastive": pa.string()}
# trial -> (params, per-epoch per-class accuracy in class-index order)
KNOWN = {
    "t1": ({"loss.temperature": 0.1, "loss.contrastive": "sc"}, [[0.0, 0.2, 0.4, 0.1], [0.1, 0.5, 0.9, 0.3]]),
    "t2": ({"loss.temperature": 0.5, "loss.contrastive": "psc"}, [[0.2, 0.4, 0.6, 0.4], [0.4, 0.6, 1.0, 0.6]]),
    "t3": ({"loss.temperature": 0.9, "loss.contrastive": "sc"}, [[0.0, 0.1, 0.2, 0.0]]),
}


def metrics_of(epoch: int, per_class: list[float]) -> dict:
    """An epoch's metrics as the training loop reports them; groups by COUNTS (many > 100, few < 20)."""
    acc = sum(per_class) / len(per_class)
    many, medium, few = [per_class[2]], [per_class[1], per_class[3]], [per_class[0]]
    return {"epoch": epoch, "loss": 2.0 / epoch, "con_loss": 1.5 / epoch, "ce_loss": 1.0 / epoch,
            "alpha": 1.0 - epoch / 4, "lr": 0.1, "acc": acc, "balanced_acc": acc, "many_acc": sum(many) / len(many),
            "medium_acc": sum(medium) / len(medium), "few_acc": sum(few) / len(few), "epoch_time_s": 0.1,
            "eval_time_s": 0.01, "images_per_s": 100.0, "data_wait_s": 0.0, "per_class_acc": per_class}


def sweep_doc(metric="acc", mode="max") -> dict:
    return {"name": "known", "objective": {"metric": metric, "mode": mode}}


def base_config() -> dict:
    from hybridlt.sweep.config import load_run_config

    return load_run_config(None, ["name=known", "data.many_above=100", "data.few_below=20", "train.epochs=2",
                                  "optim.milestones=[]"]).model_dump(mode="json")


def write_known_trial(root: Location, trial_id: str, params: dict, epochs: list[list[float]],
                      status: str = "completed", with_row: bool = True, with_per_class: bool = True) -> None:
    """One trial's epochs (and per-class rows) and, unless it is still running, its trials row."""
    writer = ResultsWriter(root)
    rows = []
    for e, per_class in enumerate(epochs, start=1):
        m = metrics_of(e, per_class)
        rows.append({k: v for k, v in m.items() if k != "per_class_acc"})
        if with_per_class:
            writer.epoch(trial_id, m, NAMES, COUNTS)
        else:
            from hybridlt.sweep.store import epoch_table, write_table_atomic

            write_table_atomic(epoch_table(trial_id, m), root / "epochs" / f"{trial_id}-epoch-{e:04d}.parquet")
    if not with_row:
        return
    config = {**base_config(), "loss": {**base_config()["loss"], "temperature": params["loss.temperature"],
                                        "contrastive": params["loss.contrastive"]}}
    row = {"trial_id": trial_id, "status": status, "epochs_planned": 2, "wall_time_s": 1.0,
           "config_yaml": yaml.safe_dump(config, sort_keys=False), **trial_summary(rows),
           **{f"param.{k}": v for k, v in params.items()}}
    writer.trial(row, trials_schema(PARAM_TYPES))


def known_store(path: Path, metric="acc", mode="max") -> Location:
    """Three finished trials (t3 stopped after one epoch) with the per-class numbers in ``KNOWN``."""
    root = Location.of(path)
    ResultsWriter(root).sweep_yaml(sweep_doc(metric, mode), base_config(), PARAM_TYPES)
    for tid, (params, epochs) in KNOWN.items():
        write_known_trial(root, tid, params, epochs, status="stopped_early" if len(epochs) < 2 else "completed")
    return root


TINY = ["data.dataset=digits_lt", "data.imbalance_ratio=10", "data.max_count=60", "data.test_per_class=20",
        "data.many_above=40", "data.few_below=15", "augment.crop_padding=1", "augment.flip=false",
        "model.backbone=resnet8", "model.proj_dim=32", "optim.lr=0.1", "optim.schedule=cosine",
        "optim.milestones=[]", "optim.warmup_epochs=0", "train.epochs=2", "train.batch_size=64", "train.device=cpu"]
TRAINED_PARAMS = [{"loss.contrastive": "psc", "loss.temperature": 0.2},
                  {"loss.contrastive": "sc", "loss.temperature": 0.07},
                  {"loss.contrastive": "mpsc", "loss.temperature": 0.5, "loss.prototypes_per_class": 2},
                  {"loss.contrastive": "psc", "loss.temperature": 0.9}]


class _Stop(Exception):
    """Ends a trial early, as ASHA would."""


def trained_store(tmp_path: Path) -> Location:
    """A 4-trial sweep of the tiny digits-LT config, trained here; the last trial stops after one epoch."""
    import torch

    from hybridlt.sweep.build import build_run
    from hybridlt.sweep.spec import apply_params, load_sweep_spec
    from hybridlt.sweep.trial import record_trained
    from hybridlt.sweep.tuner import StoreCallback

    torch.set_num_threads(2)
    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "tiny", "storage": str(tmp_path / "sweeps"), "base": str(ROOT / "configs" / "quickstart.yaml"),
        "overrides": TINY, "trials": len(TRAINED_PARAMS), "concurrency": 2,
        "space": {"loss.contrastive": {"choice": ["sc", "psc", "mpsc"]},
                  "loss.temperature": {"loguniform": [0.05, 1.0]},
                  "loss.prototypes_per_class": {"int": [2, 3], "when": {"loss.contrastive": "mpsc"}}}}))
    spec, base = load_sweep_spec(spec_path)
    root = Location.of(tmp_path / "sweeps" / "tiny" / "results")
    types = {path: param_type(list(p.values)) for path, p in spec.space.items()}
    ResultsWriter(root).sweep_yaml(spec.model_dump(mode="json"), base.model_dump(mode="json"), types)
    callback = StoreCallback(spec, base, root, trials_schema(types))
    last_trial = len(TRAINED_PARAMS) - 1
    for i, params in enumerate(TRAINED_PARAMS):
        trial_id = f"{0x5eed0000 + i:08x}"
        cfg = apply_params(base, params)
        parts = build_run(cfg)
        record_trained(root, trial_id, params, cfg, parts.trainer.core)

        def report(metrics, state, parts=parts, trial_id=trial_id, last=i == last_trial):
            ResultsWriter(root).epoch(trial_id, metrics, parts.class_names, parts.class_counts)
            if last and metrics["epoch"] == 1:
                raise _Stop

        try:
            parts.trainer.fit(report)
        except _Stop:
            pass
        callback.write(trial_id, params, {"time_total_s": 1.0}, "completed")
    return root
