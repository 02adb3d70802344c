"""The latency budget: from --budget-ms or --speedup, and refused when the space cannot reach it."""

from __future__ import annotations

import math
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
    plans: dict[str, Plan] = {}
    variants = (("teacher", False), ("int8", False), ("teacher", True), ("int8", True))
    for kind, factorize in variants:
        params: dict[str, Any] = baseline_params(space, kind)
        for k in space.knobs():
            wanted = k.section in ("prune", "student") or (factorize and k.section == "rank")
            if k.fastest is not None and wanted:
                params[k.name] = k.param(k.fastest)
        plan = replay(space, params)
        plan = Plan({**plan.to_dict(), "finetune.epochs": 0})
        plans[plan.key] = plan
    return list(plans.values())


def fastest_reachable_ms(
    experiment: Experiment, space: Space, reference: Reference, reference_ms: float
) -> float:
    """Measured latency of the most compressed plans: the floor of what the space can reach."""
    probe = LatencyProbe(experiment, reference, reference_ms)
    best = float("inf")
    for plan in extreme_plans(space):
        try:
            best = min(best, probe(plan))
        except Exception as exc:  # noqa: BLE001 - InvalidPlan, or a model that breaks
            raise EdgeCompressError(
                f"the most compressed plan of the space cannot be built "
                f"({type(exc).__name__}: {str(exc)[:300]}); lower the largest pruning ratio "
                "or exclude the layer named (Experiment.exclude), or narrow the space."
            ) from None
    return best


def check_reachable(budget_ms: float, fastest_ms: float, reference_ms: float) -> None:
    # 10% slack: the estimate itself is a measurement, and fine-tuning does not change latency.
    if budget_ms < 0.9 * fastest_ms:
        raise EdgeCompressError(
            f"the latency budget {budget_ms:.4f} ms is below what the search space can reach: "
            f"its most compressed plan measures about {fastest_ms:.4f} ms here (the uncompressed "
            f"model: {reference_ms:.4f} ms, so at most about {reference_ms / fastest_ms:.1f}x "
            "faster). Raise --budget-ms or lower --speedup, or widen the space."
        )
