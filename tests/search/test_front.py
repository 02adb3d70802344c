"""The front and feasibility on a hand-made set of trials."""

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from edgecompress.errors import TrialsKeepFailing
from edgecompress.search import Result, pareto_mask
from edgecompress.search.executors import FailureCount
from edgecompress.search.front import columns
from edgecompress.search.meta import StudyMeta


def _result(rows: list[tuple[int, float, float]], budget_ms: float) -> Result:
    frame = pd.DataFrame(
        [
            {
                "trial": n,
                "accuracy": acc,
                "test_accuracy": math.nan,
                "latency_ms": lat,
                "size_mb": 1.0,
                "feasible": lat <= budget_ms,
                "violation_ms": max(0.0, lat - budget_ms),
                "latency_spread_pct": 1.0,
                "baseline": "",
                "plan": {"prune.a": 0.5},
            }
            for n, acc, lat in rows
        ],
        columns=columns("accuracy"),
    )
    return Result("s", study_meta(budget_ms=budget_ms), frame, failed=0, artifacts={})


def study_meta(**given: Any) -> StudyMeta:
    """A study's settings for a result made in a test: ``given`` over plain defaults."""
    base = {
        "experiment": "s",
        "objectives": ["accuracy", "latency_ms"],
        "budget_ms": 1.0,
        "reference_latency_ms": 2.0,
        "target": {"name": "local-cpu", "threads": 1, "batch_size": 1},
        "device": {"cpu_model": "some CPU"},
        "artifacts": "/nowhere",
    }
    return StudyMeta.from_dict({**base, **given})


def test_front_keeps_feasible_non_dominated_trials_only() -> None:
    result = _result(
        [
            (0, 0.99, 2.0),
            (1, 0.97, 0.5),
            (2, 0.96, 0.6),
            (3, 0.95, 0.2),
            (4, 0.98, 0.9),
            (5, 0.90, 0.3),
        ],
        budget_ms=1.0,
    )
    front = result.front()
    # 0 is over budget; 2 is dominated by 1; 5 is dominated by 3
    assert list(front["trial"]) == [4, 1, 3]
    assert front["feasible"].all()
    assert int(result.best()["trial"]) == 4  # the most accurate within the budget
    records = result.records(front)
    assert records[0]["test_accuracy"] is None and records[0]["speedup"] == pytest.approx(2.0 / 0.9)


def test_no_feasible_trial_gives_the_closest_ones() -> None:
    result = _result([(0, 0.99, 2.0), (1, 0.97, 1.2), (2, 0.96, 1.5)], budget_ms=1.0)
    assert not result.has_feasible and result.best() is None
    front = result.front(closest=2)
    assert list(front["trial"]) == [1, 2]
    assert list(front["violation_ms"]) == pytest.approx([0.2, 0.5])


def test_pareto_mask_with_three_objectives() -> None:
    values = np.array([[0.9, 1.0, 5.0], [0.9, 1.0, 4.0], [0.8, 0.5, 9.0], [0.7, 0.6, 9.0]])
    mask = pareto_mask(values, ["maximize", "minimize", "minimize"])
    assert list(mask) == [False, True, True, False]


def test_failure_count_stops_on_repeated_errors_not_on_isolated_ones() -> None:
    count = FailureCount()
    for _ in range(5):
        count.record("Traceback: boom")
        count.record("Traceback: boom")
        count.record(None)  # a success resets the count
    for _ in range(9):
        count.record("InvalidPlan: prune: ...")
    with pytest.raises(TrialsKeepFailing, match="invalid plans"):
        count.record("InvalidPlan: prune: ...")
    count = FailureCount()
    count.record("Traceback: a")
    count.record("Traceback: b")
    with pytest.raises(TrialsKeepFailing, match="errors"):
        count.record("Traceback: c")
