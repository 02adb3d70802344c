"""Executors run asked trials and tell their outcomes; the ledger decides what runs.

``InProcess`` runs one trial at a time in this process (``--workers 1``, no Ray).
``RayTune`` (in ``ray_executor``) runs them in parallel on Ray Tune.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna

from edgecompress.errors import EdgeCompressError
from edgecompress.experiment import Experiment
from edgecompress.plan import InvalidPlan
from edgecompress.search.ledger import Ledger
from edgecompress.search.study import fail_and_retry
from edgecompress.search.trial import Outcome, Reference, run_trial

OnDone = Callable[[optuna.Trial, Outcome | None], None]
MAX_CONSECUTIVE_ERRORS = 3


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, InvalidPlan):
        return f"InvalidPlan: {exc}"
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])


@dataclass
class FailureCount:
    """Stops a search whose trials keep crashing (a bug, not a bad plan)."""

    consecutive: int = 0
    last: str = ""
    limit: int = field(default=MAX_CONSECUTIVE_ERRORS)

    def record(self, error: str | None) -> None:
        if error is None or error.startswith("InvalidPlan"):
            self.consecutive = 0 if error is None else self.consecutive
            return
        self.consecutive, self.last = self.consecutive + 1, error
        if self.consecutive >= self.limit:
            raise EdgeCompressError(
                f"{self.consecutive} trials in a row failed with an error (not an invalid plan); "
                f"stopping the search. The study keeps every finished trial. Last error:\n"
                f"{self.last}"
            )


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
            )
        except Exception as exc:  # noqa: BLE001 - recorded on the trial
            error = describe_error(exc)
            ledger.fail(trial, error)
            on_done(trial, None)
            failures.record(error)
            continue
        except BaseException:
            fail_and_retry(ledger.study, trial, "interrupted: the search was stopped")
            raise
        ledger.tell(trial, outcome)
        failures.record(None)
        on_done(trial, outcome)
