"""Registries: every choice a config makes by name, each filled beside its implementations.

``LOSSES = Registry("loss.contrastive")``; ``@LOSSES.register("sc")`` on a class or function;
``LOSSES.build("sc", **fields)`` calls it with the keyword arguments it takes (config fields are
named like the builder's parameters, so a config section can be passed whole). The config's
allowed values are ``LOSSES.names()``. A registry may name a package to ``discover``: its modules
are imported on first use, so a new module that registers itself needs no edit anywhere else.

Dependency-free, so that ``hybridlt.model`` and ``hybridlt.data`` use it on a bare GPU machine.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any

from hybridlt.errors import InputError


class UnknownChoiceError(InputError, KeyError):
    """A name that is not in its registry; the message names the field, the value and what is allowed."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class Registry:
    """Names -> builders for one config field (``field`` is its dotted path, for messages)."""

    def __init__(self, field: str, discover: str | None = None):
        self.field = field
        self.discover = discover
        self._entries: dict[str, Callable[..., Any]] = {}
        self._discovered = discover is None

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def add(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries and self._entries[name] is not builder:
                raise ValueError(f"{self.field}: {name!r} is registered twice")
            self._entries[name] = builder
            return builder

        return add

    def _load(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self.discover)
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.discover}.{info.name}")

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        self._load()
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __getitem__(self, name: str) -> Callable[..., Any]:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownChoiceError(f"{self.field}: unknown value {name!r}; allowed: "
                                     f"{', '.join(map(repr, self._entries))}") from None

    def accepts(self, name: str) -> set[str]:
        """The keyword arguments the builder of ``name`` takes. A class whose ``__init__`` passes
        ``**kwargs`` on to its base takes its bases' too; a function with ``**kwargs`` takes any (``"*"``)."""
        builder = self[name]
        chain = [c.__init__ for c in builder.__mro__ if "__init__" in vars(c)] if inspect.isclass(builder) \
            else [builder]
        accepted: set[str] = set()
        for fn in chain:
            params = inspect.signature(fn).parameters.values()
            accepted |= {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
                return accepted - {"self"}
        return {"*"}

    def build(self, name: str, /, **fields: Any) -> Any:
        """Call the builder of ``name`` with the ``fields`` it accepts; the others are left out."""
        accepted = self.accepts(name)
        if "*" not in accepted:
            fields = {k: v for k, v in fields.items() if k in accepted}
        return self[name](**fields)
