"""Allocation under a budget, on a hand-made profile and a latency that is not additive."""

from __future__ import annotations

import pytest

from edgecompress.plan import Plan
from edgecompress.search.allocation import (
    TRIES,
    allocate,
    choose,
    multiplier,
    options,
    uniform_at,
)
from edgecompress.search.sensitivity import Point, Sensitivity
from edgecompress.spaces import Knob, KnobSpace

REFERENCE_MS = 1.0
# three groups: "a" costs most and is least sensitive, "c" is cheap and very sensitive
COST = {"prune.a": 0.5, "prune.b": 0.3, "prune.c": 0.2}
SENSITIVITY = {"prune.a": 0.05, "prune.b": 0.4, "prune.c": 3.0}


def _space() -> KnobSpace:
    knobs = [
        Knob(name=n, kind="float", low=0.0, high=0.9, step=0.05, identity=0.0, fastest=0.9)
        for n in COST
    ]
    knobs.append(
        Knob(name="bits.a", kind="ordinal", choices=(8, 32), identity=32, fastest=8, layers=("a",))
    )
    return KnobSpace(tuple(knobs))


def latency(plan: Plan) -> float:
    """Each group's time shrinks with the channels it keeps, and with the next group's
    (coupled: not additive), plus a fixed overhead; int8 on "a" halves its time."""
    kept = {n: 1.0 - float(plan[n]) for n in COST}
    a = COST["prune.a"] * kept["prune.a"] * (0.5 + 0.5 * kept["prune.b"])
    a *= 0.5 if plan["bits.a"] == 8 else 1.0
    b = COST["prune.b"] * kept["prune.b"] * (0.5 + 0.5 * kept["prune.c"])
    return 0.05 + a + b + COST["prune.c"] * kept["prune.c"]


def _profile() -> Sensitivity:
    base = {"prune.a": 0.0, "prune.b": 0.0, "prune.c": 0.0, "bits.a": 0}  # int8 base
    space = _space()

    def ratio(changes: dict[str, float | int]) -> float:
        params = {**base, **changes}
        plan = space.sample(_fixed(params))
        return latency(plan) / REFERENCE_MS

    prune = {
        n: tuple(Point(r, SENSITIVITY[n] * r**2, ratio({n: r})) for r in (0.25, 0.5, 0.75, 0.9))
        for n in COST
    }
    bits = {"bits.a": (Point(32.0, 0.0, ratio({"bits.a": 1})),)}
    return Sensitivity(base, 0.01, ratio({}), prune, bits)


def _fixed(params):  # type: ignore[no-untyped-def]
    import optuna

    return optuna.trial.FixedTrial(params)


@pytest.mark.parametrize("target_ms", [0.6, 0.4, 0.3, 0.2])
def test_allocation_is_measured_within_its_budget(target_ms: float) -> None:
    space, profile, measured = _space(), _profile(), []

    def probe(plan: Plan) -> float:
        measured.append(latency(plan))
        return measured[-1]

    found = allocate(profile, space, probe, target_ms=target_ms, reference_ms=REFERENCE_MS)
    assert found is not None
    plan = space.sample(_fixed(found.params))
    assert latency(plan) <= target_ms
    assert found.latency_ms == pytest.approx(latency(plan))
    assert len(measured) <= TRIES  # the additive model is corrected by measurement, not searched
    # the least sensitive, most costly group is pruned at least as far as the sensitive one
    assert plan["prune.a"] >= plan["prune.c"]


def test_allocation_beats_the_uniform_plan_at_the_same_budget() -> None:
    space, profile = _space(), _profile()
    for target_ms in (0.4, 0.3):
        alloc = allocate(profile, space, latency, target_ms=target_ms, reference_ms=REFERENCE_MS)
        uniform = uniform_at(profile, space, latency, target_ms=target_ms)
        assert alloc is not None and uniform is not None
        assert uniform.latency_ms <= target_ms
        assert len({uniform.params[n] for n in COST}) == 1  # one global ratio
        assert alloc.damage < uniform.damage


def test_unreachable_budget_gives_nothing() -> None:
    space, profile = _space(), _profile()
    fastest = latency(space.sample(_fixed({**{n: 0.9 for n in COST}, "bits.a": 0})))
    target = fastest * 0.5
    assert allocate(profile, space, latency, target_ms=target, reference_ms=REFERENCE_MS) is None
    assert uniform_at(profile, space, latency, target_ms=target) is None


def test_multiplier_trades_damage_for_latency_monotonically() -> None:
    opts = options(_profile(), {k.name: k for k in _space().knobs()}, REFERENCE_MS)
    deltas = [choose(opts, multiplier(opts, d))[1] for d in (-0.1, -0.3, -0.5)]
    assert deltas[0] <= -0.1 and deltas[1] <= -0.3 and deltas[2] <= -0.5
    damages = [choose(opts, multiplier(opts, d))[2] for d in (-0.1, -0.3, -0.5)]
    assert damages == sorted(damages)


def test_precision_kept_at_the_base_when_asked() -> None:
    space, profile = _space(), _profile()
    found = allocate(
        profile, space, latency, target_ms=0.9, reference_ms=REFERENCE_MS, precision=False
    )
    assert found is not None and found.params["bits.a"] == 0  # the base's int8
