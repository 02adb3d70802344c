"""Running asked trials: in this process (``--workers 1``), or on Ray Tune (``ray_executor``).

Either way the ledger decides what runs and records every outcome.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass

import optuna

from edgecompress.errors import TrialsKeepFailing
from edgecompress.experiment import Experiment
from edgecompress.plan import InvalidPlan
from edgecompress.search.ledger import Ledger
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
    """The budget a trial is screened against; None for the baselines, which always run."""
    return None if trial.user_attrs.get("baseline") else ledger.budget_ms


def run_in_process(
    ledger: Ledger, experiment: Experiment, reference: Reference, total: int, on_done: OnDone
) -> None:
    failures = FailureCount()
    while ledger.completed() < total:
        trial, plan = ledger.ask()
        try:
            outcome = run_trial(
                experiment,
                plan,
                reference=reference,
                reference_ms=ledger.reference_ms,
                staging=ledger.staging,
                costing=ledger.costing,
                budget_ms=screening_budget(ledger, trial),
            )
        except Exception as exc:  # noqa: BLE001 - recorded on the trial
            error = describe_error(exc)
            ledger.fail(trial, error)
            on_done(trial, None)
            failures.record(error)
            continue
        except BaseException:
            ledger.interrupt(trial, "interrupted: the search was stopped")
            raise
        ledger.tell(trial, outcome)
        failures.record(None)
        on_done(trial, outcome)
        failures.record_screened(outcome.screened)
