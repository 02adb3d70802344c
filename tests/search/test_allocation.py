"""Allocation under a budget, on a hand-made profile and a latency that is not additive."""

from __future__ import annotations

import pytest

from edgecompress.plan import Plan
from edgecompress.search.allocation import (
    TRIES,
    allocate,
    choose,
    compressed_at,
    floor,
    multiplier,
    options,
    uniform_at,
)
from edgecompress.search.sensitivity import Point, Sensitivity
from edgecompress.spaces import Knob, KnobSpace, on_grid

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
    opts = options(_profile(), {k.name: k for k in _space().knobs()})
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


def test_floor_is_the_fastest_plan_an_allocation_reaches() -> None:
    space, profile = _space(), _profile()
    lowest = floor(profile, space, latency)
    fastest = latency(space.sample(_fixed({**{n: 0.9 for n in COST}, "bits.a": 0})))
    assert lowest.latency_ms == pytest.approx(fastest)
    assert {lowest.params[n] for n in COST} == {0.9} and lowest.params["bits.a"] == 0
    near = allocate(profile, space, latency, target_ms=fastest * 1.08, reference_ms=REFERENCE_MS)
    assert near is not None and near.latency_ms <= fastest * 1.08
    assert near.damage <= lowest.damage  # near the floor, the allocation spares some damage


def test_floor_is_the_median_of_three_measurements() -> None:
    """One measurement of a tiny model can be 20% off, and every rung is placed from the floor:
    one slow reading (5x) does not move it."""
    space, profile = _space(), _profile()
    readings = iter([1.0, 5.0, 1.2])
    lowest = floor(profile, space, lambda plan: next(readings))
    assert lowest.latency_ms == 1.2 == lowest.target_ms
    assert next(readings, None) is None  # measured three times


def _two_sections() -> KnobSpace:
    """Two pruning groups and a student width knob (a section the profile does not cover)."""
    prune = [
        Knob(name=n, kind="float", low=0.0, high=0.9, step=0.05, identity=0.0, fastest=0.9)
        for n in ("prune.a", "prune.b")
    ]
    width = Knob(
        name="student.width",
        kind="float",
        low=0.25,
        high=1.0,
        step=0.05,
        identity=1.0,
        fastest=0.25,
    )
    return KnobSpace((*prune, width))


def _shrinking(plan: Plan) -> float:
    """Each pruning group's time shrinks with its kept channels; the width scales them all."""
    kept = sum(1.0 - float(plan[n]) for n in ("prune.a", "prune.b")) / 2
    return 0.05 + kept * float(plan["student.width"])


@pytest.mark.parametrize("target_ms", [0.6, 0.3, 0.1])
def test_compressed_at_finds_the_least_common_level_within_the_target(target_ms: float) -> None:
    space, base = _two_sections(), {"prune.a": 0.0, "prune.b": 0.0, "student.width": 1.0}
    weights = {"prune": 1.0, "student": 1.0}
    found = compressed_at(space, _shrinking, target_ms=target_ms, base=base, weights=weights)
    assert found is not None and found.latency_ms <= target_ms
    assert _shrinking(space.sample(_fixed(found.params))) == pytest.approx(found.latency_ms)
    assert found.params["prune.b"] == found.params["prune.a"]  # one common level
    # a linear scan of the levels finds the same plan: the least level within the target
    knobs = space.knobs()
    for step in range(21):
        params = {k.name: on_grid(k, step * 0.05) for k in knobs}
        if _shrinking(space.sample(_fixed(params))) <= target_ms:
            break
    assert found.params == params


def test_compressed_at_weighs_sections_and_refuses_the_unreachable() -> None:
    space, base = _two_sections(), {"prune.a": 0.0, "prune.b": 0.0, "student.width": 1.0}
    only_width = compressed_at(
        space, _shrinking, target_ms=0.5, base=base, weights={"student": 1.0}
    )
    assert only_width is not None
    assert only_width.params["prune.a"] == 0.0 and only_width.params["student.width"] <= 0.45
    half = compressed_at(
        space, _shrinking, target_ms=0.5, base=base, weights={"student": 1.0, "prune": 0.5}
    )
    assert half is not None and 0 < half.params["prune.a"] < 0.9
    assert half.params["student.width"] > only_width.params["student.width"]
    # the most compressed plan measures 0.05 + 0.1 * 0.25: a target below it is refused
    weights = {"prune": 1.0, "student": 1.0}
    assert compressed_at(space, _shrinking, target_ms=0.07, base=base, weights=weights) is None
    assert compressed_at(space, _shrinking, target_ms=0.5, base=base, weights={}) is None


def test_the_knob_that_breaks_the_most_compressed_plan_is_named() -> None:
    """A plan that cannot be built names the knob that breaks it alone, with its value and
    layers (a MiniLM's refusal named none, issue 14); a combination is said to be one."""
    from edgecompress.search.budget import _extremes, breaking_knob

    space = _two_sections()
    (plan, params), *_ = _extremes(space)
    assert {plan["prune.a"], plan["prune.b"], plan["student.width"]} == {0.9, 0.25}

    def breaks_on_b(p: Plan) -> float:
        if float(p["prune.b"]) >= 0.9:
            raise RuntimeError("shape '[1, 16, -1, 32]' is invalid for input of size 608")
        return 1.0

    said = breaking_knob(space, breaks_on_b, params)
    assert said.startswith("The knob prune.b at 0.9 breaks the model alone (RuntimeError: shape")
    assert "Exclude that layer" in said

    def breaks_together(p: Plan) -> float:
        if float(p["prune.a"]) >= 0.9 and float(p["prune.b"]) >= 0.9:
            raise RuntimeError("boom")
        return 1.0

    assert breaking_knob(space, breaks_together, params).startswith("No knob breaks the model")
