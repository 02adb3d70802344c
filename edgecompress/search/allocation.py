"""Allocation: the per-layer plan that loses the least fidelity within a latency budget.

Each knob the profile covers offers options, each with a damage (the task's divergence from the
teacher, see ``sensitivity``) and a latency change from the base plan, as a log ratio: the model
predicts a plan's latency as the base's times the product of each option's ratio alone. (A sum of
the savings measured alone double-counts: pruning a group shrinks its own layer and the next
one, so the next group's saving alone counts that layer again; summed, the savings of the
example's groups exceed the whole model's latency. A product saturates as latency does.) For a
multiplier ``lam``, every knob takes the option minimizing ``damage + lam * log ratio`` (a
Lagrangian relaxation of the knapsack "least total damage within the budget", exact where the
model is); ``lam`` is found by bisection so that the predicted saving meets a target. The plan
is then built untrained and measured, and the saving asked for is corrected along the secant
of measured log latency against predicted log saving until the plan fits the budget: what is
returned was measured within it. ``uniform_at`` does the same for one global ratio (what
a user does by hand), by bisection on the ratio. ``floor`` is the fastest plan the profiled
knobs reach. ``compressed_at`` serves budgets beyond that floor: every knob with a fastest
value (students and ranks too, which the profile does not cover) the same share of the way
there, weighted by section, by bisection on the share.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecompress.plan import Plan
from edgecompress.search.sensitivity import Point, Sensitivity
from edgecompress.spaces import Knob, Space, on_grid, replay

GRID = 0.05  # the pruning knobs' step
TRIES = 6  # measurements per allocation
CLOSE = 0.95  # a plan measured within [CLOSE * target, target] is taken at once

Latency = Callable[[Plan], float]


@dataclass(frozen=True)
class Allocation:
    """A plan (as Optuna params) measured within its target before any training."""

    params: dict[str, Any]
    latency_ms: float  # measured untrained (or predicted from the table)
    damage: float  # the profile's predicted damage: sum over knobs
    target_ms: float


@dataclass(frozen=True)
class _Options:
    """One knob's options: Optuna params, damage, latency change from the base (log ratio)."""

    name: str
    values: tuple[Any, ...]
    damage: np.ndarray
    delta: np.ndarray

    def best(self, lam: float) -> int:
        return int(np.argmin(self.damage + lam * self.delta))


def _interpolate(points: tuple[Point, ...], base_ratio: float, x: np.ndarray) -> tuple[Any, Any]:
    values = [0.0, *(p.value for p in points)]
    damage = np.interp(x, values, [0.0, *(p.damage for p in points)])
    ratio = np.interp(x, values, [base_ratio, *(p.ratio for p in points)])
    return damage, ratio


def options(
    profile: Sensitivity,
    knobs: dict[str, Knob],
    *,
    gamma: float = 1.0,
    precision: bool = True,
) -> list[_Options]:
    """Every profiled knob's options. ``gamma`` bends the damage (``d ** gamma``, scaled so the
    largest finite damage stays put): below 1 it spreads compression more evenly, above 1 it
    concentrates it on the least sensitive knobs. ``precision`` False keeps the base widths."""
    found = []
    for name, points in profile.prune.items():
        knob = knobs[name]
        steps = round(float(knob.high or 0.0) / GRID)
        grid = np.round(np.arange(steps + 1) * GRID, 6)
        damage, ratio = _interpolate(points, profile.base_ratio, grid)
        delta = np.log(ratio / profile.base_ratio)
        found.append(_Options(name, tuple(float(g) for g in grid), damage, delta))
    if precision:
        for name, points in profile.bits.items():
            knob = knobs[name]
            values = (profile.base_params[name], *(knob.param(int(p.value)) for p in points))
            damage = np.array([0.0, *(p.damage - profile.base_damage for p in points)])
            delta = np.log(np.array([1.0, *(p.ratio / profile.base_ratio for p in points)]))
            found.append(_Options(name, values, damage, delta))
    return [_bent(o, gamma, _largest(found)) for o in found]


def _largest(found: list[_Options]) -> float:
    finite = [float(d) for o in found for d in o.damage if math.isfinite(d) and d > 0]
    return max(finite, default=1.0)


def _bent(o: _Options, gamma: float, scale: float) -> _Options:
    if gamma == 1.0:
        return o
    sign = np.sign(o.damage)
    bent = sign * scale * (np.abs(o.damage) / scale) ** gamma
    return _Options(o.name, o.values, bent, o.delta)


def choose(opts: list[_Options], lam: float) -> tuple[dict[str, Any], float, float]:
    """Each knob's best option at ``lam``: (params, predicted log latency change, damage)."""
    params, delta, damage = {}, 0.0, 0.0
    for o in opts:
        i = o.best(lam)
        params[o.name] = o.values[i]
        delta += float(o.delta[i])
        damage += float(o.damage[i])
    return params, delta, damage


def multiplier(opts: list[_Options], delta: float) -> float:
    """The smallest ``lam`` (log bisection) whose choice changes log latency by at most
    ``delta``; the largest tried when none reaches it."""
    low, high = -12.0, 12.0  # log10 of lam
    if choose(opts, 10**high)[1] > delta:
        return 10**high
    for _ in range(60):
        mid = (low + high) / 2
        if choose(opts, 10**mid)[1] <= delta:
            high = mid
        else:
            low = mid
    return float(10**high)


def allocate(
    profile: Sensitivity,
    space: Space,
    latency: Latency,
    *,
    target_ms: float,
    reference_ms: float,
    fixed: dict[str, Any] | None = None,
    gamma: float = 1.0,
    precision: bool = True,
) -> Allocation | None:
    """The least-damage plan measured within ``target_ms`` (None if none was found in
    ``TRIES`` measurements). ``fixed``: params set on every plan (criterion, alignment,
    distillation)."""
    knobs = {k.name: k for k in space.knobs()}
    opts = options(profile, knobs, gamma=gamma, precision=precision)
    base_ms = profile.base_ratio * reference_ms
    best = None
    over, under = -math.inf, math.inf  # predicted savings measured too slow / within target
    goal = math.log(target_ms)
    last = (0.0, math.log(base_ms))  # the secant's previous point: no saving, the base plan
    saving = math.log(base_ms / target_ms)
    for _ in range(TRIES):
        chosen, delta, damage = choose(opts, multiplier(opts, -saving))
        params = {**profile.base_params, **(fixed or {}), **chosen}
        measured = latency(replay(space, params))
        if measured <= target_ms:
            under = min(under, -delta)
            if best is None or measured > best.latency_ms:
                best = Allocation(params, measured, damage, target_ms)
            if measured >= CLOSE * target_ms:
                break
        else:
            over = max(over, -delta)
        here = (-delta, math.log(measured))
        saving = _next_saving(last, here, goal, over, under)
        last = here
    return best


def _next_saving(
    last: tuple[float, float],
    here: tuple[float, float],
    goal: float,
    over: float,
    under: float,
) -> float:
    """The predicted log saving to ask for next: along the secant of (predicted log saving,
    measured log latency) through the last two points toward ``goal`` (the target's log),
    kept strictly inside the bracket of savings known too small (``over``) and large enough
    (``under``): their midpoint when it falls outside."""
    slope = (here[1] - last[1]) / (here[0] - last[0]) if here[0] != last[0] else 0.0
    guess = here[0] + (goal - here[1]) / slope if slope < 0 else math.nan
    if math.isfinite(over) and math.isfinite(under):
        inside = over < guess < under
        return guess if inside else (over + under) / 2
    if math.isnan(guess):  # no slope yet: ask for more saving, or less
        return here[0] * (1.5 if here[1] > goal else 0.8) + 1e-9
    return guess


def floor(
    profile: Sensitivity,
    space: Space,
    latency: Latency,
    *,
    fixed: dict[str, Any] | None = None,
    repeats: int = 3,
) -> Allocation:
    """Every profiled knob at its largest predicted saving, measured: the fastest plan an
    allocation can reach (its ``target_ms`` is its own latency). The median of ``repeats``
    measurements: every target below the budget is placed from it, and one measurement of a
    0.02 ms model can be 20% off."""
    knobs = {k.name: k for k in space.knobs()}
    chosen, _, damage = choose(options(profile, knobs), 1e12)
    params = {**profile.base_params, **(fixed or {}), **chosen}
    plan = replay(space, params)
    measured = statistics.median(latency(plan) for _ in range(max(1, repeats)))
    return Allocation(params, measured, damage, measured)


def compressed_at(
    space: Space,
    latency: Latency,
    *,
    target_ms: float,
    base: dict[str, Any],
    weights: dict[str, float],
    fixed: dict[str, Any] | None = None,
) -> Allocation | None:
    """The least common level measured within ``target_ms`` (None if even the most misses),
    by bisection on a 0.05 grid of levels: at level ``t`` every knob of a section in
    ``weights`` with a fastest value is ``min(1, t * weights[section])`` of the way from its
    identity to it (``on_grid``), every other knob as in ``base``. The levels go on until every
    weighted section is at its fastest (a weight under 0.05 counts as 0). Its damage is unknown
    (nan): the profile does not cover students."""
    weights = {s: w for s, w in weights.items() if w >= GRID}
    knobs = [
        k
        for k in space.knobs()
        if k.section in weights and k.fastest is not None and k.identity is not None
    ]
    if not knobs:
        return None
    most = 1.0 / min(weights[k.section] for k in knobs)
    grid = [round(i * GRID, 6) for i in range(math.ceil(most / GRID - 1e-9) + 1)]

    def at(level: float) -> tuple[dict[str, Any], float]:
        params = {**base, **(fixed or {})}
        for k in knobs:
            params[k.name] = k.param(on_grid(k, min(1.0, level * weights[k.section])))
        return params, latency(replay(space, params))

    found = _least(grid, at, target_ms)
    return None if found is None else Allocation(found[0], found[1], math.nan, target_ms)


def _least(
    grid: list[float],
    at: Callable[[float], tuple[dict[str, Any], float]],
    target_ms: float,
) -> tuple[dict[str, Any], float] | None:
    """The plan at the least ``grid`` value measured within ``target_ms``, by bisection
    (latency taken to fall along the grid); None if even the last misses."""
    low, high = 0, len(grid) - 1
    params, measured = at(grid[high])
    if measured > target_ms:
        return None
    found = (params, measured)
    while high - low > 1:
        mid = (low + high) // 2
        params, measured = at(grid[mid])
        if measured <= target_ms:
            high, found = mid, (params, measured)
        else:
            low = mid
    return found


def uniform_at(
    profile: Sensitivity,
    space: Space,
    latency: Latency,
    *,
    target_ms: float,
    fixed: dict[str, Any] | None = None,
) -> Allocation | None:
    """One pruning ratio for every group (the base precisions kept): the least ratio measured
    within ``target_ms``, by bisection on the ratio's grid (None if even the most misses)."""
    prune = [k for k in space.knobs() if k.name in profile.prune]
    if not prune:
        return None
    most = max(float(k.high or 0.0) for k in prune)
    grid = [round(i * GRID, 6) for i in range(round(most / GRID) + 1)]

    def at(ratio: float) -> tuple[dict[str, Any], float]:
        params = {**profile.base_params, **(fixed or {})}
        params.update({k.name: min(ratio, float(k.high or 0.0)) for k in prune})
        return params, latency(replay(space, params))

    found = _least(grid, at, target_ms)
    if found is None:
        return None
    damage = sum(
        float(
            np.interp(
                found[0][k.name],
                [0.0, *(p.value for p in profile.prune[k.name])],
                [0.0, *(p.damage for p in profile.prune[k.name])],
            )
        )
        for k in prune
    )
    return Allocation(found[0], found[1], damage, target_ms)
