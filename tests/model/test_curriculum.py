"""The curriculum alpha(t) of Eq. 1 against hand-computed values (PAPER.md, "Curriculum")."""

from __future__ import annotations

import math

import pytest

from hybridlt.model.curriculum import CURRICULA, Curriculum

T = 200


@pytest.mark.parametrize(
    ("t", "want"),
    [(0, 1.0), (20, 0.99), (50, 0.9375), (100, 0.75), (150, 0.4375), (199, 0.009975)],
)
def test_parabolic(t: int, want: float):
    assert Curriculum("power", T, power=2.0)(t) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize(("t", "want"), [(0, 1.0), (20, 0.9), (50, 0.75), (100, 0.5), (150, 0.25), (199, 0.005)])
def test_linear(t: int, want: float):
    assert Curriculum("power", T, power=1.0)(t) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("power", [1.0, 2.0, 3.0])
def test_power_starts_at_one_stays_positive_and_falls(power: float):
    alpha = Curriculum("power", T, power=power)
    values = [alpha(t) for t in range(T)]
    assert values[0] == 1.0
    assert values[-1] > 0
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


def test_default_is_the_papers_parabolic():
    alpha = Curriculum()
    assert (alpha.kind, alpha.epochs, alpha.power) == ("power", 200, 2.0)
    assert alpha(100) == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("t", "want"),
    [(0, 1.0), (50, (1 + math.sqrt(0.5)) / 2), (100, 0.5), (150, (1 - math.sqrt(0.5)) / 2)],
)
def test_cosine(t: int, want: float):
    assert Curriculum("cosine", T)(t) == pytest.approx(want, abs=1e-12)


def test_cosine_last_epoch_positive_and_small():
    alpha = Curriculum("cosine", T)(T - 1)
    assert 0 < alpha < 1e-3
    assert alpha == pytest.approx((1 + math.cos(math.pi * 199 / 200)) / 2)


def test_step():
    alpha = Curriculum("step", T, switch=0.3, low=0.2)  # switch epoch 60
    assert [alpha(t) for t in (0, 30, 59)] == [1.0, 1.0, 1.0]
    assert [alpha(t) for t in (60, 61, 199)] == [0.2, 0.2, 0.2]
    assert not any(alpha.freezes_backbone(t) for t in range(T))


def test_step_default_low_is_zero():
    alpha = Curriculum("step", 10, switch=0.5)
    assert [alpha(t) for t in range(10)] == [1.0] * 5 + [0.0] * 5


@pytest.mark.parametrize("value", [0.0, 0.3, 0.8])
def test_constant(value: float):
    alpha = Curriculum("constant", T, value=value)
    assert {alpha(t) for t in range(T)} == {value}


def test_two_stage_freezes_backbone_after_switch():
    alpha = Curriculum("two_stage", T, switch=0.75)  # switch epoch 150
    assert [alpha(t) for t in (0, 149)] == [1.0, 1.0]
    assert [alpha(t) for t in (150, 199)] == [0.0, 0.0]
    assert [alpha.freezes_backbone(t) for t in (0, 149, 150, 199)] == [False, False, True, True]


@pytest.mark.parametrize("kind", ["power", "cosine", "constant", "step"])
def test_only_two_stage_freezes(kind: str):
    alpha = Curriculum(kind, 10, switch=0.5)
    assert not any(alpha.freezes_backbone(t) for t in range(10))


def test_unknown_kind():
    with pytest.raises(ValueError) as excinfo:
        Curriculum("parabola", T)
    message = str(excinfo.value)
    assert "curriculum.kind" in message and "parabola" in message
    for kind in ("power", "cosine", "step", "constant", "two_stage"):
        assert repr(kind) in message
    assert set(CURRICULA) == {"power", "cosine", "step", "constant", "two_stage"}
