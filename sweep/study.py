"""The sweep's Optuna study in a real database: the searcher Tune drives, and its storage URL.

``search.storage`` is any SQLAlchemy URL Optuna accepts (``sqlite:///…``, ``postgresql://…``,
``mysql+pymysql://…``). Left out, the study goes to an SQLite file:

- ``<storage>/<name>/optuna.db`` for a sweep stored on a local (or NFS) folder;
- ``$HYBRIDLT_OPTUNA_DIR/<name>-<hash>.db`` (default ``~/.cache/hybridlt/optuna``) on the driver's
  disk when the sweep is stored on ``s3://`` or another object store: SQLite needs a real file
  system with locks, which an object store is not. The hash is of the sweep's URI, so two sweeps
  of one name on different buckets do not share a file. A resume must run on the same machine
  (or set ``search.storage`` to a database server, which a cluster should do anyway).

The study is named after the sweep. ``optuna-dashboard <url>`` and ``optuna.load_study(study_name=
<name>, storage=<url>)`` open it; every Optuna trial carries the Tune trial id as its user
attribute ``ray_trial_id`` (the ``trial_id`` of the results store).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ray.tune.search.optuna import OptunaSearch

from hybridlt.errors import InputError

TRIAL_ATTR = "ray_trial_id"


def default_storage_url(storage_uri: str, name: str) -> str:
    """The SQLite URL a sweep uses when ``search.storage`` is not set (see the module docstring)."""
    if "://" not in storage_uri or storage_uri.startswith("file://"):
        folder = Path(storage_uri.removeprefix("file://")) / name
        return f"sqlite:///{folder / 'optuna.db'}"
    where = Path(os.environ.get("HYBRIDLT_OPTUNA_DIR") or Path.home() / ".cache" / "hybridlt" / "optuna")
    digest = hashlib.sha256(f"{storage_uri.rstrip('/')}/{name}".encode()).hexdigest()[:8]
    return f"sqlite:///{where.expanduser() / f'{name}-{digest}.db'}"


def study_url(spec) -> str:
    """The study's storage URL for ``spec``: ``search.storage`` or the default SQLite file."""
    return spec.search.storage or default_storage_url(spec.storage_uri, spec.name)


def hide_password(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for sweep.yaml and messages)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_storage(url: str):
    """Optuna's RDB storage for ``url``; an SQLite file's folder is created first."""
    import optuna

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # a driver that is not installed, a server that does not answer
        raise InputError(f"search.storage: cannot open {hide_password(url)} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:300]})") from None


class StudySearch(OptunaSearch):
    """Ray's OptunaSearch that tags each Optuna trial with its Tune trial id (user attribute
    ``ray_trial_id``). A module-level class, so that tuner.pkl unpickles it on resume."""

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and config is not None:
            ot_trial.set_user_attr(TRIAL_ATTR, trial_id)
        return config


def close_orphans(spec) -> int:
    """Mark as failed the study's trials still RUNNING after the sweep ended: trials asked for just
    before a driver was killed, which Tune's last snapshot never saw and will never tell. Returns
    how many. Without this they would stay RUNNING in optuna-dashboard forever."""
    from optuna.trial import TrialState

    storage = open_storage(study_url(spec))
    try:
        study_id = storage.get_study_id_from_name(spec.name)
    except KeyError:
        return 0
    running = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
    for t in running:
        storage.set_trial_user_attr(t._trial_id, "hybridlt_orphan", True)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return len(running)
