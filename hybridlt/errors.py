"""The exceptions a user's input can cause. Each message is one or more lines naming the field or
file, the value and what is allowed; the CLI prints them as ``error: ...`` and exits 2.

Dependency-free, so that ``hybridlt.model`` and ``hybridlt.data`` can raise them on a machine that
has only torch.
"""

from __future__ import annotations


class HybridLTError(Exception):
    """Base of every error hybridlt raises for something the user gave it (config, file, store)."""


class InputError(HybridLTError, ValueError):
    """A value, file or folder that cannot be used as given."""


class OutputExistsError(InputError, FileExistsError):
    """An output file or folder that is already there and would be overwritten without ``--force``."""
