"""The curriculum weight alpha(t) of Eq. 1: alpha weights the contrastive term, t = epoch index.

``CURRICULA`` holds one function per ``curriculum.kind``: ``fn(t, epochs, **fields) -> alpha`` for
t = 0 .. T-1, taking the ``curriculum.*`` fields it needs. ``Curriculum(kind, epochs, ...)`` is the
callable the trainer uses; ``two_stage`` also freezes the backbone once alpha reaches 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hybridlt.registry import Registry

CURRICULA = Registry("curriculum.kind")


def _switch_epoch(epochs: int, switch: float) -> int:
    return int(round(switch * epochs))


@CURRICULA.register("power")
def power_curriculum(t: int, epochs: int, power: float) -> float:
    """``1 - (t/T)^power``: 2 = the paper's parabolic decay, 1 = linear."""
    return 1.0 - (t / epochs) ** power


@CURRICULA.register("cosine")
def cosine_curriculum(t: int, epochs: int) -> float:
    """``(1 + cos(pi t / T)) / 2``."""
    return 0.5 * (1.0 + math.cos(math.pi * t / epochs))


@CURRICULA.register("step")
def step_curriculum(t: int, epochs: int, switch: float, low: float) -> float:
    """1 before ``switch * T``, then ``low``."""
    return 1.0 if t < _switch_epoch(epochs, switch) else low


@CURRICULA.register("constant")
def constant_curriculum(t: int, epochs: int, value: float) -> float:
    """``value`` throughout."""
    return value


@CURRICULA.register("two_stage")
def two_stage_curriculum(t: int, epochs: int, switch: float) -> float:
    """1 before ``switch * T``, then 0 with a frozen backbone (``freezes_backbone``)."""
    return 1.0 if t < _switch_epoch(epochs, switch) else 0.0


two_stage_curriculum.freezes_backbone = True


@dataclass(frozen=True)
class Curriculum:
    """alpha(t) for t in 0 .. epochs-1. Fields not used by ``kind`` are ignored."""

    kind: str = "power"
    epochs: int = 200
    power: float = 2.0
    value: float = 0.5
    switch: float = 0.5
    low: float = 0.0

    def __post_init__(self):
        CURRICULA[self.kind]  # noqa: B018  (an unknown kind fails here, naming the allowed ones)

    def switch_epoch(self) -> int:
        return _switch_epoch(self.epochs, self.switch)

    def __call__(self, t: int) -> float:
        return CURRICULA.build(self.kind, t=t, epochs=self.epochs, power=self.power, value=self.value,
                               switch=self.switch, low=self.low)

    def freezes_backbone(self, t: int) -> bool:
        return getattr(CURRICULA[self.kind], "freezes_backbone", False) and t >= self.switch_epoch()
