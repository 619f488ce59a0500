"""One training run in this process, written to a run directory.

Layout of ``RUN_DIR``: ``config.yaml`` (resolved), ``epochs/`` and ``per_class/`` (Parquet
tables, one file per epoch), ``checkpoints/epoch-NNNN.pt`` (the last ``keep_checkpoints``).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from hybridlt.errors import InputError
from hybridlt.model.checkpoint import load_newest_readable, save_checkpoint
from hybridlt.sweep.build import build_run
from hybridlt.sweep.config import ConfigError, RunConfig, load_run_config, validate_run_config
from hybridlt.sweep.results import ResultsWriter
from hybridlt.sweep.store import writable_folder, write_text_atomic

CKPT_RE = re.compile(r"^epoch-(\d{4,})\.pt$")


class RunDirError(InputError):
    """The run directory cannot be used as asked; the message says why and what to do."""


def checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    folder = run_dir / "checkpoints"
    found = [p for p in folder.glob("epoch-*.pt") if CKPT_RE.match(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(CKPT_RE.match(p.name).group(1)))


def latest_good_checkpoint(run_dir: Path, warn: Callable[[str], None] = print) -> dict | None:
    """The newest readable checkpoint; unreadable ones are named in a warning and skipped."""
    return load_newest_readable(reversed(checkpoints(run_dir)), warn)


def prepare_run_dir(run_dir: Path, cfg: RunConfig | None, resume: bool) -> RunConfig:
    """Check the directory against the request; returns the config to run."""
    saved = run_dir / "config.yaml"
    if resume:
        writable_folder(run_dir, "--out", create=False)  # a file, a read-only folder: one line, now
        if not saved.is_file():
            raise RunDirError(f"--resume: {run_dir} holds no run (no config.yaml); start it without --resume")
        saved_cfg = load_run_config(saved, resolve_paths=False)
        if cfg is not None and cfg != saved_cfg:
            diff = _diff(saved_cfg.model_dump(), cfg.model_dump())
            raise RunDirError(f"--resume: the config differs from the one {run_dir} was started with ({diff}); "
                              f"resume without --config/--set or choose another --out")
        return saved_cfg
    if cfg is None:
        raise ConfigError("train: --config is required (or --resume with --out of an existing run)")
    if saved.exists() or checkpoints(run_dir):
        raise RunDirError(f"--out: {run_dir} already holds a run; pass --resume to continue it or choose another --out")
    writable_folder(run_dir, "--out")
    write_text_atomic(cfg.to_yaml(), saved)
    return cfg


def recorded_with_overrides(run_dir: Path, overrides) -> RunConfig | None:
    """For ``--resume --set ...`` without ``--config``: the config ``run_dir`` recorded (its own, or its
    first seed's) with the overrides applied, so that a difference is named as the key the overrides
    change (compared with the recorded one, not with the defaults). None when it records none."""
    run_dir = Path(run_dir)
    saved = [run_dir / "config.yaml", *sorted(run_dir.glob("seed-*/config.yaml"))]
    found = next((p for p in saved if p.is_file()), None)
    if found is None:
        return None
    return load_run_config(found, list(overrides), resolve_paths=False)  # a seed's: train_seeds sets each seed


def _diff(a: dict, b: dict, prefix: str = "") -> str:
    for key in a:
        if a[key] != b.get(key):
            if isinstance(a[key], dict):
                return _diff(a[key], b[key], f"{prefix}{key}.")
            return f"{prefix}{key}: {a[key]!r} -> {b.get(key)!r}"
    return "?"


class RunWriter:
    """The ``report`` of a local run: Parquet rows per epoch, atomic checkpoints, pruning."""

    def __init__(self, run_dir: Path, trial_id: str, class_names, counts, keep: int, on_epoch=None):
        self.run_dir, self.trial_id = run_dir, trial_id
        self.class_names, self.counts, self.keep = class_names, counts, keep
        self.on_epoch = on_epoch
        self.rows = ResultsWriter(run_dir)

    def __call__(self, metrics: dict, checkpoint: dict | None) -> None:
        self.rows.epoch(self.trial_id, metrics, self.class_names, self.counts)
        if checkpoint is not None:
            save_checkpoint(checkpoint, self.run_dir / "checkpoints" / f"epoch-{metrics['epoch']:04d}.pt")
            for old in checkpoints(self.run_dir)[:-self.keep]:
                old.unlink(missing_ok=True)
        if self.on_epoch:
            self.on_epoch(metrics)


def keeps_torch_threads(fn):
    """Restore torch's intra-op thread count after ``fn``: ``train.threads`` sets it for the run only
    (a notebook that trains an exported config goes on with the threads it had)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import torch

        threads = torch.get_num_threads()
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
    return wrapper


def _recorded(run_dir: Path) -> bool:
    """Whether a run directory (or one of its seeds) has recorded an epoch."""
    return any(run_dir.glob("epochs/*.parquet")) or any(run_dir.glob("seed-*/epochs/*.parquet"))


@contextmanager
def undone_unless_started(run_dir: Path, resume: bool):
    """A new run that stops before it records its first epoch (data it cannot read, a model that does
    not build, Ctrl-C) takes back what it wrote: the same command, corrected, starts it, where
    ``--out ... already holds a run`` would refuse it and ``--resume`` would compare against the bad
    config. A folder this run created goes; in a folder that existed, what was there stays."""
    before = set(run_dir.iterdir()) if run_dir.is_dir() else None  # a run writes at its top level only
    try:
        yield
    except BaseException:
        if not resume and not _recorded(run_dir):
            if before is None:
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                for path in set(run_dir.iterdir()) - before:  # config.yaml, seeds.json, seed-*/, epochs/, ...
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
        raise


@keeps_torch_threads
def train_local(cfg: RunConfig | None, run_dir: str | Path, resume: bool = False, on_epoch=None,
                on_start=None, warn: Callable[[str], None] = print) -> tuple[dict, object]:
    """Train (or resume) one run in this process; returns the last metrics and the run parts."""
    run_dir = Path(run_dir).resolve()
    with undone_unless_started(run_dir, resume):
        cfg = prepare_run_dir(run_dir, cfg, resume)
        parts = build_run(cfg)
        if resume:
            state = latest_good_checkpoint(run_dir, warn)
            if state is not None:
                parts.trainer.load_state_dict(state)
        if on_start:
            on_start(cfg, parts)
        writer = RunWriter(run_dir, cfg.name, parts.class_names, parts.class_counts, cfg.train.keep_checkpoints,
                           on_epoch)
        metrics = parts.trainer.fit(writer)
    return metrics, parts


SEEDS_FILE = "seeds.json"


def seed_dir(run_dir: Path, seed: int) -> Path:
    return run_dir / f"seed-{seed}"


def _seeds_of(run_dir: Path, seeds: list[int] | None, resume: bool) -> list[int]:
    """The seeds to run: as given, or on ``resume`` those ``run_dir`` was started with."""
    manifest = run_dir / SEEDS_FILE
    if resume:
        if not manifest.is_file():
            raise RunDirError(f"--resume: {run_dir} holds no multi-seed run (no {SEEDS_FILE}); "
                              f"resume a one-seed run without --seeds, or start this one without --resume")
        try:
            saved = json.loads(manifest.read_text())["seeds"]
            assert isinstance(saved, list) and saved and all(isinstance(x, int) for x in saved)
        except (ValueError, KeyError, TypeError, AssertionError):
            raise RunDirError(f"--resume: {manifest} is not a seeds file of hybridlt (a JSON object with a "
                              f"list of integer 'seeds')") from None
        if seeds and list(seeds) != saved:
            raise RunDirError(f"--seeds: {list(seeds)} differs from the seeds {run_dir} was started with "
                              f"({saved}); resume without --seeds or choose another --out")
        return saved
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: {list(seeds)} repeats a seed; allowed: distinct integers >= 0")
    if any(s < 0 or s > 2**32 - 1 for s in seeds):
        raise ConfigError(f"--seeds: {list(seeds)}; allowed: integers 0 .. 4294967295")
    return list(seeds)


@keeps_torch_threads
def train_seeds(cfg: RunConfig | None, seeds: list[int] | None, run_dir: str | Path, fuse: bool = False,
                resume: bool = False, on_epoch=None, warn: Callable[[str], None] = print) -> list[tuple[int, dict]]:
    """Train ``cfg`` once per seed, each an ordinary run in ``run_dir/seed-<s>``; returns ``(seed, last
    metrics)`` pairs. ``fuse``: the seeds train together as one vmapped model (``model/fused.py``), same
    results as one after another, files alike, so a fused run resumes fused or not. ``resume``: the
    seeds ``run_dir/seeds.json`` names. ``on_epoch(seed, metrics)`` after each epoch of each seed."""
    run_dir = Path(run_dir).resolve()
    if cfg is None and not resume:
        raise ConfigError("train: --config is required (or --resume with --out of an existing run)")
    seeds = _seeds_of(run_dir, seeds, resume)
    if fuse and cfg is not None:
        _check_fusable(cfg)
    with undone_unless_started(run_dir, resume):
        return _train_seeds(cfg, seeds, run_dir, fuse, resume, on_epoch, warn)


def _train_seeds(cfg, seeds, run_dir, fuse, resume, on_epoch, warn) -> list[tuple[int, dict]]:
    if not resume:
        if (run_dir / "config.yaml").exists() or (run_dir / SEEDS_FILE).exists():
            raise RunDirError(f"--out: {run_dir} already holds a run; pass --resume to continue it or choose "
                              f"another --out")
        writable_folder(run_dir, "--out")
        write_text_atomic(json.dumps({"seeds": seeds}) + "\n", run_dir / SEEDS_FILE)
    # On resume, a seed that has its config.yaml continues; one the interruption came before starts.
    started = [resume and (seed_dir(run_dir, s) / "config.yaml").is_file() for s in seeds]
    if cfg is None and not any(started):
        raise RunDirError(f"--resume: no seed in {run_dir} got as far as its config.yaml; start the run again "
                          f"with --config (and without --resume)")
    base = cfg or load_run_config(seed_dir(run_dir, seeds[started.index(True)]) / "config.yaml", resolve_paths=False)
    cfgs = [validate_run_config({**base.model_dump(mode="json"), "seed": s}) for s in seeds]
    # a started seed continues with the config it was started with (checked against ``cfg`` where given)
    given = [c if cfg is not None or not st else None for c, st in zip(cfgs, started, strict=True)]

    def hook(seed):
        return (lambda m: on_epoch(seed, m)) if on_epoch else None

    if not fuse:
        return [(s, train_local(g, seed_dir(run_dir, s), st, hook(s), warn=warn)[0])
                for s, g, st in zip(seeds, given, started, strict=True)]
    cfgs = [prepare_run_dir(seed_dir(run_dir, s), g, st) for s, g, st in zip(seeds, given, started, strict=True)]
    return list(zip(seeds, _train_fused(cfgs, [seed_dir(run_dir, s) for s in seeds], resume, hook, warn),
                    strict=True))


def _check_fusable(cfg: RunConfig) -> None:
    if cfg.train.compile:
        raise ConfigError(f"--fuse: train.compile is {cfg.train.compile!r}; fused trials run eagerly, "
                          f"allowed: false")


def _train_fused(cfgs: list[RunConfig], dirs: list[Path], resume: bool, hook, warn) -> list[dict]:
    from hybridlt.model.fused import FusedObjectives, FusedTrainer, fused_optimizer
    from hybridlt.model.optim import build_scheduler
    from hybridlt.sweep.build import load_dataset, resolve_device

    lead = cfgs[0]
    rest = lead.model_dump(exclude={"seed"})
    for c, d in zip(cfgs[1:], dirs[1:], strict=True):
        if c.model_dump(exclude={"seed"}) != rest:
            raise ConfigError(f"--fuse: {d}/config.yaml differs from {dirs[0]}/config.yaml in more than the seed "
                              f"({_diff(rest, c.model_dump(exclude={'seed'}))}); fused trials differ only in "
                              f"their seed")
    _check_fusable(lead)
    device = resolve_device(lead.train.device)
    data = load_dataset(lead.data)
    parts = [build_run(c, device=device, data=data) for c in cfgs]
    states = [latest_good_checkpoint(d, warn) for d in dirs] if resume else []
    if any(s is not None for s in states):
        epochs = {str(d.name): (s or {}).get("epoch", 0) for d, s in zip(dirs, states, strict=True)}
        if len(set(epochs.values())) != 1:
            raise RunDirError(f"--resume --fuse: the seeds stopped at different epochs ({epochs}); fused trials "
                              f"continue from one epoch: resume without --fuse")
    o = lead.optim
    fused = FusedObjectives([p.trainer.core for p in parts]).to(device)
    optimizer = fused_optimizer(fused, o.lr, o.momentum, o.weight_decay, o.nesterov)
    scheduler = build_scheduler(optimizer, parts[0].trainer.streams.steps_per_epoch, lead.train.epochs, o.schedule,
                                o.warmup_epochs, o.milestones, o.gamma)
    trainer = FusedTrainer(fused, optimizer, scheduler, [p.trainer for p in parts])
    if states and states[0] is not None:
        trainer.load_member_states(states)
    writers = [RunWriter(d, c.name, p.class_names, p.class_counts, c.train.keep_checkpoints, hook(c.seed))
               for d, c, p in zip(dirs, cfgs, parts, strict=True)]
    return trainer.fit(writers)


def train_distributed(cfg: RunConfig | None, run_dir: str | Path, workers: int, resume: bool = False,
                      cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0, max_failures: int = 2,
                      address: str | None = None) -> dict:
    """Train one config with ``workers`` DDP workers under Ray Train; returns the last epoch's metrics.

    Rank 0 writes the same tables as a local run; checkpoints live in ``RUN_DIR/ray`` and a
    second start with ``resume`` continues from the last one (Ray Train's own restore).
    """
    from hybridlt.sweep.trial import fit_with_train
    from hybridlt.sweep.tuner import own_state_api, start_ray

    run_dir = Path(run_dir).resolve()
    if workers < 1:
        raise ConfigError(f"--workers: {workers} given; must be >= 1")
    if cfg is not None and cfg.train.batch_size % workers:
        raise ConfigError(f"train.batch_size: {cfg.train.batch_size} is not divisible by --workers {workers}; "
                          f"each step splits the batch evenly over the workers")
    with undone_unless_started(run_dir, resume):
        cfg = prepare_run_dir(run_dir, cfg, resume)
        start_ray(address, 1, log_to_driver=True)  # one run: its workers' warnings belong on this terminal
        loop_config = {"cfg": cfg.model_dump(mode="json"), "trial_id": cfg.name, "results_root": str(run_dir),
                       "cpus": cpus_per_worker}  # each worker runs on as many intra-op threads as CPUs it holds
        with own_state_api():
            result = fit_with_train(loop_config, "train", str(run_dir / "ray"), workers, cpus_per_worker,
                                    gpus_per_worker, max_failures, keep=cfg.train.keep_checkpoints)
        if result.error:
            raise result.error
    return result.metrics or {}


def last_epoch_from_store(run_dir: str | Path):
    """The last epoch's metrics, class names, counts, groups and config of a run directory."""
    from hybridlt.data.long_tail import shot_groups
    from hybridlt.sweep.results import read_dataset

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir / "config.yaml", resolve_paths=False)
    epochs = sorted(read_dataset(run_dir, "epochs").to_pylist(), key=lambda r: r["epoch"])
    metrics = epochs[-1]
    rows = [r for r in read_dataset(run_dir, "per_class").to_pylist() if r["epoch"] == metrics["epoch"]]
    rows.sort(key=lambda r: r["class_index"])
    metrics["per_class_acc"] = [r["accuracy"] for r in rows]
    counts = [r["train_count"] for r in rows]
    groups = shot_groups(counts, cfg.data.many_above, cfg.data.few_below)
    return metrics, [r["class_name"] for r in rows], counts, groups, cfg


__all__ = ["train_local", "train_seeds", "train_distributed", "RunDirError", "validate_run_config",
           "latest_good_checkpoint"]
