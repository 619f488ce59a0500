"""The curriculum weight alpha(t) of Eq. 1: alpha weights the contrastive term, t = epoch index.

``Curriculum(kind, epochs, ...)`` is a callable ``t -> alpha`` for t = 0 .. T-1.
``two_stage`` also freezes the backbone once alpha reaches 0 (``freezes_backbone(t)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CURRICULA = ("power", "cosine", "step", "constant", "two_stage")


@dataclass(frozen=True)
class Curriculum:
    """alpha(t) for t in 0 .. epochs-1. Fields not used by ``kind`` are ignored.

    power: ``1 - (t/T)^power`` (2 = the paper's parabolic, 1 = linear);
    cosine: ``(1 + cos(pi t / T)) / 2``; step: 1 before ``switch * T``, then ``low``;
    constant: ``value``; two_stage: 1 before ``switch * T``, then 0 with a frozen backbone.
    """

    kind: str = "power"
    epochs: int = 200
    power: float = 2.0
    value: float = 0.5
    switch: float = 0.5
    low: float = 0.0

    def __post_init__(self):
        if self.kind not in CURRICULA:
            raise ValueError(f"curriculum.kind: unknown value {self.kind!r}; allowed: {CURRICULA}")

    def switch_epoch(self) -> int:
        return int(round(self.switch * self.epochs))

    def __call__(self, t: int) -> float:
        frac = t / self.epochs
        if self.kind == "power":
            return 1.0 - frac**self.power
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * frac))
        if self.kind == "constant":
            return self.value
        before = t < self.switch_epoch()
        if self.kind == "step":
            return 1.0 if before else self.low
        return 1.0 if before else 0.0  # two_stage

    def freezes_backbone(self, t: int) -> bool:
        return self.kind == "two_stage" and t >= self.switch_epoch()
