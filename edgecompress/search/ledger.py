"""Ledger: the ask/tell loop over the Optuna study, the only record of what ran.

The driver asks a trial, samples its plan, hands the plan to an executor, and tells the
outcome: metrics as user attributes, objective values, the ONNX file as an Optuna artifact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import TrialState

from edgecompress.plan import Plan
from edgecompress.search.storage import META
from edgecompress.search.study import driver_id
from edgecompress.search.trial import Outcome
from edgecompress.spaces import Space


@dataclass
class Ledger:
    study: optuna.Study
    space: Space
    objectives: tuple[str, ...]

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.study.user_attrs[META])

    @property
    def budget_ms(self) -> float:
        return float(self.meta["budget_ms"])

    @property
    def reference_ms(self) -> float:
        return float(self.meta["reference_latency_ms"])

    def artifacts(self) -> FileSystemArtifactStore:
        path = Path(self.meta["artifacts"])
        path.mkdir(parents=True, exist_ok=True)
        return FileSystemArtifactStore(str(path))

    @property
    def staging(self) -> str:
        """Where workers leave ONNX files for the driver to store (inside the artifact folder)."""
        return str(Path(self.meta["artifacts"]) / "staging")

    def completed(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def ask(self) -> tuple[optuna.Trial, Plan]:
        trial = self.study.ask()
        plan = self.space.sample(trial)
        trial.set_user_attr("plan", plan.to_dict())
        trial.set_user_attr("plan_key", plan.key)
        trial.set_user_attr("driver", driver_id())
        return trial, plan

    def tell(self, trial: optuna.Trial, outcome: Outcome) -> None:
        for name, value in outcome.metrics.items():
            trial.set_user_attr(name, float(value))
        trial.set_user_attr("notes", outcome.notes)
        artifact = upload_artifact(
            artifact_store=self.artifacts(),
            file_path=outcome.onnx_path,
            study_or_trial=trial,
            mimetype="application/onnx",
        )
        Path(outcome.onnx_path).unlink(missing_ok=True)
        trial.set_user_attr("artifact_id", artifact)
        trial.set_constraint("latency_budget", outcome.metrics["latency_ms"] - self.budget_ms)
        self.study.tell(trial, [outcome.metrics[o] for o in self.objectives])

    def fail(self, trial: optuna.Trial, error: str) -> None:
        trial.set_user_attr("error", error[:2000])
        self.study.tell(trial, state=TrialState.FAIL)

    def best_feasible(self) -> FrozenTrialSummary | None:
        feasible = [
            t
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("latency_ms", float("inf")) <= self.budget_ms
        ]
        if not feasible:
            return None
        t = max(feasible, key=lambda t: (t.user_attrs["accuracy"], -t.user_attrs["latency_ms"]))
        return FrozenTrialSummary(t.number, t.user_attrs["accuracy"], t.user_attrs["latency_ms"])


@dataclass(frozen=True)
class FrozenTrialSummary:
    number: int
    accuracy: float
    latency_ms: float
