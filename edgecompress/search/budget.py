"""The latency budget: from --budget-ms or --speedup, and refused when the space cannot reach it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from edgecompress.errors import EdgeCompressError
from edgecompress.experiment import Experiment
from edgecompress.plan import Plan
from edgecompress.search.probe import LatencyProbe, Reference
from edgecompress.spaces import Space, baseline_params, replay


def check_budget_numbers(budget_ms: float | None, speedup: float | None) -> None:
    """Each of the two that is given is a finite number > 0 (a NaN budget compares unequal to
    everything: a study created with one could never be resumed or completed)."""
    for flag, value in (("--budget-ms", budget_ms), ("--speedup", speedup)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise EdgeCompressError(f"{flag} must be a finite number > 0, got {value}")


def resolve_budget(
    budget_ms: float | None, speedup: float | None, reference_ms: float
) -> tuple[float, float | None]:
    """``(budget_ms, speedup)``: exactly one of the two must be given."""
    if (budget_ms is None) == (speedup is None):
        raise EdgeCompressError(
            "give the latency budget as exactly one of --budget-ms X (milliseconds on the "
            "target) or --speedup S (the uncompressed model's latency divided by S)."
        )
    check_budget_numbers(budget_ms, speedup)
    if speedup is not None:
        return reference_ms / speedup, speedup
    assert budget_ms is not None
    return budget_ms, None


def extreme_plans(space: Space) -> list[Plan]:
    """The most compressed plans of the space without fine-tuning: the fastest pruning and
    student in fp32 and in int8, each with and without the lowest ranks (factorizing, like
    int8, may or may not be faster on a given CPU)."""
    return [plan for plan, _ in _extremes(space)]


def _extremes(space: Space) -> list[tuple[Plan, dict[str, Any]]]:
    """``extreme_plans``, each with the knob parameters it was built from."""
    plans: dict[str, tuple[Plan, dict[str, Any]]] = {}
    variants = (("teacher", False), ("int8", False), ("teacher", True), ("int8", True))
    for kind, factorize in variants:
        params: dict[str, Any] = baseline_params(space, kind)
        for k in space.knobs():
            wanted = k.section in ("prune", "student") or (factorize and k.section == "rank")
            if k.fastest is not None and wanted:
                params[k.name] = k.param(k.fastest)
        plan = _untrained(replay(space, params))
        plans[plan.key] = (plan, params)
    return list(plans.values())


def _untrained(plan: Plan) -> Plan:
    return Plan({**plan.to_dict(), "finetune.epochs": 0})


def fastest_reachable_ms(
    experiment: Experiment, space: Space, reference: Reference, reference_ms: float
) -> float:
    """Measured latency of the most compressed plans: the floor of what the space can reach."""
    probe = LatencyProbe(experiment, reference, reference_ms)
    best = float("inf")
    for plan, params in _extremes(space):
        try:
            best = min(best, probe(plan))
        except Exception as exc:  # noqa: BLE001 - InvalidPlan, or a model that breaks
            culprit = breaking_knob(space, probe, params)
            raise EdgeCompressError(
                f"the most compressed plan of the space cannot be built "
                f"({type(exc).__name__}: {str(exc)[:300]}). {culprit}"
            ) from None
    return best


def breaking_knob(space: Space, probe: Callable[[Plan], float], params: dict[str, Any]) -> str:
    """Which knob of the plan built from ``params`` breaks the model: each compressed knob set
    alone on the uncompressed plan, in the space's order, until one fails; and what to do."""
    base = baseline_params(space, "teacher")
    for knob in space.knobs():
        value = params.get(knob.name)
        if value is None or knob.kind == "fixed" or value == base.get(knob.name):
            continue
        try:
            probe(_untrained(replay(space, {**base, knob.name: value})))
        except Exception as exc:  # noqa: BLE001 - this knob alone breaks it
            ordered = knob.kind == "ordinal" and isinstance(value, int)
            shown = knob.choices[value] if ordered else value
            layers = ", ".join(knob.layers[:3]) or knob.name
            return (
                f"The knob {knob.name} at {shown} breaks the model alone "
                f"({type(exc).__name__}: {str(exc)[:200]}); it covers {layers}. Exclude that "
                "layer (Experiment.exclude), or lower that knob's most compressed value."
            )
    return (
        "No knob breaks the model alone: the combination does. Lower the largest pruning "
        "ratio (AutoSpace.max_prune), or narrow the space."
    )


def check_reachable(budget_ms: float, fastest_ms: float, reference_ms: float) -> None:
    # 10% slack: the estimate itself is a measurement, and fine-tuning does not change latency.
    if budget_ms < 0.9 * fastest_ms:
        raise EdgeCompressError(
            f"the latency budget {budget_ms:.4f} ms is below what the search space can reach: "
            f"its most compressed plan measures about {fastest_ms:.4f} ms here (the uncompressed "
            f"model: {reference_ms:.4f} ms, so at most about {reference_ms / fastest_ms:.1f}x "
            "faster). Raise --budget-ms or lower --speedup, or widen the space."
        )
