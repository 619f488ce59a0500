"""Checkpoints written atomically (temp file, then rename) and loaded with ``weights_only=True``."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from hybridlt.errors import InputError


class CheckpointError(InputError, RuntimeError):
    """A checkpoint file is missing, truncated or not one of ours; the message names it."""


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a crash leaves the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path}: file not found") from exc
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"checkpoint {path}: unreadable ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"checkpoint {path}: not a hybridlt checkpoint (keys 'model' and 'epoch' expected)")
    return state


def load_newest_readable(candidates: Iterable, warn: Callable[[str], None],
                         load: Callable[..., dict] = load_checkpoint) -> dict | None:
    """The state of the first of ``candidates`` (newest first) that ``load`` can read; every unreadable
    one (truncated, corrupted) is named in a ``warn`` line and skipped. None when none is readable."""
    for candidate in candidates:
        try:
            return load(candidate)
        except CheckpointError as exc:
            warn(f"warning: {exc}; falling back to an earlier checkpoint")
    return None
