"""Result: a read-only view of a study: its trials, the Pareto front, feasibility."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.artifacts import download_artifact
from optuna.trial import TrialState

from edgecompress.errors import EdgeCompressError
from edgecompress.search.artifacts import store as artifact_store
from edgecompress.search.meta import StudyMeta, read
from edgecompress.search.storage import load_existing, open_storage

COSTS = [
    "latency_ms",
    "size_mb",
    "size_gz_mb",
    "feasible",
    "violation_ms",
    "latency_spread_pct",
    "baseline",
    "proposed_by",
    "plan",
    "notes",
]


def columns(metric: str) -> list[str]:
    """The columns of a study's trials: its metric (with standard error and test value), then
    latency, sizes, feasibility and the plan."""
    return ["trial", metric, f"{metric}_se", f"test_{metric}", *COSTS]


def pareto_mask(values: np.ndarray, directions: list[str]) -> np.ndarray:
    """Rows not dominated by any other row (maximize/minimize per column)."""
    signed = values * np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    keep = np.ones(len(signed), dtype=bool)
    for i, row in enumerate(signed):
        dominated_by = np.all(signed <= row, axis=1) & np.any(signed < row, axis=1)
        keep[i] = not dominated_by.any()
    return keep


@dataclass(frozen=True)
class Result:
    study_name: str
    meta: StudyMeta
    trials: pd.DataFrame  # every completed trial
    failed: int
    artifacts: dict[int, str]  # trial number -> artifact id of its ONNX file
    screening: dict[str, float] = field(default_factory=dict)  # see ``screening_of``
    # why the search that returned this result ended before its trials were complete (its time
    # limit); None when it was not cut short
    stopped: str | None = None

    @property
    def budget_ms(self) -> float:
        return self.meta.budget_ms

    @property
    def objectives(self) -> list[str]:
        return list(self.meta.objectives)

    @property
    def metric(self) -> str:
        """The name of the task metric the study optimises (``accuracy``, ``rmse``, ...)."""
        return self.meta.metric_name

    @property
    def higher_is_better(self) -> bool:
        return self.meta.metric_direction == "maximize"

    def directions(self) -> list[str]:
        """Optuna's direction of each objective: the metric's, then minimize."""
        return [self.meta.metric_direction, *("minimize" for _ in self.objectives[1:])]

    @property
    def has_feasible(self) -> bool:
        return bool(self.trials["feasible"].any()) if len(self.trials) else False

    def front(self, *, closest: int = 5) -> pd.DataFrame:
        """Pareto-optimal feasible trials, best metric first.

        When no trial meets the budget, the ``closest`` least-violating trials instead (all with
        ``feasible`` False): check ``has_feasible``.
        """
        if not self.has_feasible:
            return self.trials.sort_values("violation_ms").head(closest).reset_index(drop=True)
        ok = self.trials[self.trials["feasible"]]
        mask = pareto_mask(ok[self.objectives].to_numpy(dtype=float), self.directions())
        front = ok[mask].drop_duplicates(subset=self.objectives)
        return front.sort_values(
            [self.metric, "latency_ms"], ascending=[not self.higher_is_better, True]
        ).reset_index(drop=True)

    def records(self, frame: pd.DataFrame) -> list[dict[str, Any]]:
        """Rows of ``frame`` as JSON-ready dicts (NaN becomes None), with the ``speedup``."""
        ref = self.meta.reference_latency_ms
        records = []
        for row in frame.to_dict(orient="records"):
            clean = {
                k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()
            }
            clean["feasible"] = bool(clean["feasible"])
            clean["speedup"] = ref / float(row["latency_ms"])
            records.append(clean)
        return records

    @property
    def max_drop(self) -> float | None:
        """The study's question: None, the best model (by its metric) within the budget; a
        number, the fastest model within that drop of the teacher's metric (in the metric's
        units: 0.01 is one accuracy point; for an error, how much larger it may be)."""
        value = self.meta.max_drop
        return None if value is None else float(value)

    def plot(self, path: str | Path, *, trial: int | None = None) -> Path:
        """Draws the trials, the front, the budget and the chosen trial (default: what
        ``best()`` picks) to ``path`` (``.png``, ``.svg``, ``.pdf`` or interactive ``.html``);
        see ``edgecompress.search.plot``."""
        from edgecompress.search.plot import plot

        return plot(self, path, trial=trial)

    def best(self) -> pd.Series | None:
        """The answer to the study's question among the feasible trials: the fastest within
        ``max_drop`` of the teacher's validation metric where the study asks that (the best
        when none is within it), else the best by the metric (then the fastest). None when
        no trial is feasible."""
        if not self.has_feasible:
            return None
        front = self.front()
        teacher = self.trials[self.trials["baseline"] == "teacher"][self.metric]
        if self.max_drop is not None and len(teacher):
            sign = 1.0 if self.higher_is_better else -1.0
            floor = sign * float(teacher.iloc[0]) - self.max_drop - 1e-12
            close = front[sign * front[self.metric] >= floor]
            if len(close):
                return close.sort_values("latency_ms").iloc[0]
        return front.iloc[0]


def _row(trial: optuna.trial.FrozenTrial, budget_ms: float, metric: str) -> dict[str, Any]:
    a = trial.user_attrs
    latency = float(a["latency_ms"])
    return {
        "trial": trial.number,
        metric: float(a[metric]),
        f"{metric}_se": float(a.get(f"{metric}_se", np.nan)),
        f"test_{metric}": float(a.get(f"test_{metric}", np.nan)),
        "latency_ms": latency,
        "size_mb": float(a["size_mb"]),
        "size_gz_mb": float(a.get("size_gz_mb", np.nan)),
        "feasible": latency <= budget_ms,
        "violation_ms": max(0.0, latency - budget_ms),
        "latency_spread_pct": float(a.get("latency_spread_pct", np.nan)),
        "baseline": a.get("baseline", ""),
        "proposed_by": a.get("proposed_by", ""),
        "plan": a["plan"],
        "notes": a.get("notes", {}),
    }


def load_result(study: optuna.Study) -> Result:
    meta = read(study)
    trials = study.get_trials(deepcopy=False)
    metric = meta.metric_name
    rows = [_row(t, meta.budget_ms, metric) for t in trials if t.state == TrialState.COMPLETE]
    frame = pd.DataFrame(rows, columns=columns(metric))
    failed = sum(t.state == TrialState.FAIL for t in trials)
    artifacts = {
        t.number: str(t.user_attrs["artifact_id"]) for t in trials if "artifact_id" in t.user_attrs
    }
    return Result(study.study_name, meta, frame, failed, artifacts, screening_of(trials))


def screening_of(trials: list[optuna.trial.FrozenTrial]) -> dict[str, float]:
    """How many plans were screened out, what screening cost, and the training time it saved:
    each screened plan would have taken a trained trial's median time."""
    screened = [t for t in trials if t.user_attrs.get("screened")]
    if not screened:
        return {}
    trained = [
        float(t.user_attrs["trial_s"])
        for t in trials
        if t.state == TrialState.COMPLETE and "trial_s" in t.user_attrs
    ]
    cost = sum(float(t.user_attrs.get("screen_s", 0.0)) for t in screened)
    would = len(screened) * float(np.median(trained)) if trained else float("nan")
    return {"screened": len(screened), "screen_s": cost, "saved_s": would - cost}


def open_result(study: str, storage: str | None = None) -> Result:
    """The result of an existing study (an error lists the studies when the name is unknown)."""
    return load_result(load_existing(study, open_storage(storage, must_exist=True), storage))


def download(result: Result, number: int, dst: Path) -> Path:
    """Trial ``number``'s ONNX file, copied from the study's artifact store to ``dst``."""
    store = artifact_store(result.meta.artifacts)  # boto3 missing: its own error
    try:
        download_artifact(
            artifact_store=store, artifact_id=result.artifacts[number], file_path=str(dst)
        )
    except Exception as exc:  # noqa: BLE001 - a missing or unreadable artifact
        raise EdgeCompressError(
            f"trial {number}: its ONNX file is not in the artifact store "
            f"{result.meta.artifacts} ({type(exc).__name__}: {exc}). The search wrote it "
            "there; restore that folder, or search again in a new study."
        ) from None
    return dst
