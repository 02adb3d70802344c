"""Running asked trials: in this process (``--workers 1``), or on Ray Tune (``ray_executor``).

Either way the ledger decides what runs and records every outcome.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna

from edgecompress.errors import TrialsKeepFailing
from edgecompress.experiment import Experiment
from edgecompress.plan import InvalidPlan
from edgecompress.search.artifacts import new_id
from edgecompress.search.ledger import Ledger
from edgecompress.search.strategies import ATTR
from edgecompress.search.trial import Outcome, Reference, run_trial

OnDone = Callable[[optuna.Trial, Outcome | None], None]


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, InvalidPlan):
        return f"InvalidPlan: {exc}"
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])


@dataclass
class FailureCount:
    """Stops a search whose trials keep failing: a bug (3 errors in a row), or a space whose
    plans cannot be built (10 invalid plans in a row)."""

    errors: int = 0
    invalid: int = 0
    screened: int = 0
    error_limit: int = 3
    invalid_limit: int = 10
    screened_limit: int = 200

    def record_screened(self, screened: bool) -> None:
        """Stops a search whose plans are almost all predicted over the budget."""
        self.screened = self.screened + 1 if screened else 0
        if self.screened >= self.screened_limit:
            raise TrialsKeepFailing(
                f"the search stopped: {self.screened} plans in a row were predicted over the "
                "latency budget (screened, none trained). The budget is out of reach of almost "
                "all of the space: raise it, or narrow the space to its faster plans."
            )

    def record(self, error: str | None) -> None:
        if error is None:
            self.errors = self.invalid = 0
            return
        if error.startswith("InvalidPlan"):
            self.invalid += 1
        else:
            self.errors += 1
        if self.errors >= self.error_limit or self.invalid >= self.invalid_limit:
            kind = "invalid plans" if self.invalid >= self.invalid_limit else "errors"
            raise TrialsKeepFailing(
                f"the search stopped: too many trials in a row failed with {kind}. The study "
                f"keeps every finished trial. Last failure:\n{error}"
            )


def screening_budget(ledger: Ledger, trial: optuna.Trial) -> float | None:
    """The budget a trial is screened against; None for the baselines, which always run, and
    for a strategy's allocation, measured within its target before it was proposed."""
    known = trial.user_attrs.get("baseline") or trial.user_attrs.get(ATTR)
    return None if known else ledger.budget_ms


@dataclass
class Loop:
    """The ask / tell / failure-count sequence every executor shares."""

    ledger: Ledger
    on_done: OnDone
    failures: FailureCount = field(default_factory=FailureCount)

    def job(self, trial: optuna.Trial) -> dict[str, Any]:
        """``run_trial``'s settings for ``trial`` (its costing apart: an object here, a dict on
        a worker)."""
        return {
            "reference_ms": self.ledger.reference_ms,
            "artifacts": self.ledger.meta.artifacts,
            "artifact_id": new_id(trial),
            "budget_ms": screening_budget(self.ledger, trial),
            "seed": self.ledger.seed_of(trial),
        }

    def told(self, trial: optuna.Trial, outcome: Outcome) -> None:
        lost = self.ledger.lost_artifact(outcome)
        if lost:
            self.failed(trial, lost)
            return
        self.ledger.tell(trial, outcome)
        self.failures.record(None)
        self.on_done(trial, outcome)
        self.failures.record_screened(outcome.screened)

    def failed(self, trial: optuna.Trial, error: str) -> None:
        self.ledger.fail(trial, error)
        self.on_done(trial, None)
        self.failures.record(error)


def run_in_process(
    ledger: Ledger, experiment: Experiment, reference: Reference, total: int, on_done: OnDone
) -> None:
    loop = Loop(ledger, on_done)
    while not ledger.enough(total) and not ledger.out_of_time():
        trial, plan = ledger.ask()
        try:
            outcome = run_trial(
                experiment, plan, reference=reference, costing=ledger.costing, **loop.job(trial)
            )
        except Exception as exc:  # noqa: BLE001 - recorded on the trial
            loop.failed(trial, describe_error(exc))
            continue
        except BaseException:
            ledger.interrupt(trial, "interrupted: the search was stopped")
            raise
        loop.told(trial, outcome)
