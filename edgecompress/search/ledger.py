"""Ledger: the ask/tell loop over the Optuna study, the only record of what ran.

The driver asks a trial, samples its plan, hands the plan to an executor, and tells the
outcome: metrics as user attributes, the budget as an Optuna constraint, objective values, and
the ONNX file the worker stored, linked as an Optuna artifact. A trial that cannot be told is
failed, never left RUNNING.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from edgecompress.plan import Plan
from edgecompress.search.artifacts import link, missing
from edgecompress.search.costing import Costing
from edgecompress.search.heartbeat import INTERVAL_S
from edgecompress.search.meta import StudyMeta, read
from edgecompress.search.strategies import Context, Strategy
from edgecompress.search.study import driver_id, fail_and_retry, recover_interrupted
from edgecompress.search.trial import Outcome
from edgecompress.spaces import Space

DUPLICATE_TRIES = 5


@dataclass
class Ledger:
    """``strategy`` proposes the next plans (with ``context``); None: the study's sampler alone.
    ``seed``: the experiment's; trial N fine-tunes from ``seed + N`` (a retry from its
    original's). ``deadline``: no trial starts after this moment (``time.monotonic()``);
    None: no time limit."""

    study: optuna.Study
    space: Space
    objectives: tuple[str, ...]
    strategy: Strategy | None = None
    context: Context | None = None
    seed: int = 0
    deadline: float | None = None
    _next_recovery: float = 0.0

    def out_of_time(self) -> bool:
        """True once the search's time limit has passed: start no more trials."""
        return self.deadline is not None and now() >= self.deadline

    @property
    def meta(self) -> StudyMeta:
        return read(self.study)

    @property
    def budget_ms(self) -> float:
        return self.meta.budget_ms

    @property
    def reference_ms(self) -> float:
        return self.meta.reference_latency_ms

    @property
    def costing(self) -> Costing | None:
        data = self.meta.costing
        return Costing.from_dict(dict(data)) if data else None

    def lost_artifact(self, outcome: Outcome) -> str | None:
        """Why a trained trial's file is not where the study keeps its files (None: it is)."""
        where = self.meta.artifacts
        if outcome.screened or not missing(where, outcome.artifact):
            return None
        host = outcome.notes.get("host", "another machine")
        return (
            f"the trial's ONNX file was stored in {where} on {host}, and this driver's {where} "
            "does not have it: the folder is not shared by the machines of the study. Give "
            "--artifacts a folder every machine mounts, or an s3:// bucket."
        )

    def completed(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def running_elsewhere(self, *, check_now: bool = False) -> int:
        """Trials of the study another live driver is running. They count toward the total:
        two drivers asked for 10 trials each completed one each past it. Every ``INTERVAL_S``
        (or now, ``check_now``) the trials of drivers that are gone (no process here, no
        heartbeat from elsewhere) are failed and queued again, for this driver or another."""
        me = driver_id()
        if check_now or time.monotonic() >= self._next_recovery:
            self._next_recovery = time.monotonic() + INTERVAL_S
            recover_interrupted(self.study, keep=me)
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return sum(1 for t in running if t.user_attrs.get("driver") != me)

    def enough(self, total: int, mine: int = 0) -> bool:
        """Whether the study has ``total`` trials complete or on their way (``mine``: this
        driver's own running trials). Where only trials running elsewhere make up the total,
        their drivers are checked now, not at the next ``INTERVAL_S``: a driver killed a moment
        ago would otherwise be counted on to finish, and the study left one trial short."""
        done = self.completed() + mine
        if done >= total or done + self.running_elsewhere() < total:
            return done >= total
        elsewhere = self.running_elsewhere(check_now=True)  # a gone driver's: queued again
        return self.completed() + mine + elsewhere >= total  # (another may have completed)

    def seed_of(self, trial: optuna.Trial) -> int:
        return self.seed + int(trial.user_attrs.get("retry_of", trial.number))

    def _propose(self) -> None:
        """Queues the strategy's next plan, unless trials are already waiting (baselines,
        retries): the sampler takes over where the strategy proposes nothing."""
        if self.strategy is None or self.context is None:
            return
        if self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return
        proposal = self.strategy.ask(self.study, self.context)
        if proposal is not None:
            attrs = {"proposed_by": proposal.label, **proposal.attrs}
            self.study.enqueue_trial(proposal.params, user_attrs=attrs)

    def ask(self) -> tuple[optuna.Trial, Plan]:
        """The next trial and its plan. A plan another trial of the study completed or is
        running (two drivers whose samplers agree, a baseline two drivers queued at once) is
        pruned as ``duplicate_of`` that trial, counted nowhere, and the next one asked; after
        ``DUPLICATE_TRIES`` in a row the space offers nothing new here, and the last runs."""
        for attempt in range(DUPLICATE_TRIES):
            trial, plan = self._ask_one()
            twin = self._twin(trial, plan.key)
            if twin is None or attempt == DUPLICATE_TRIES - 1:
                return trial, plan
            try:
                trial.set_user_attr("duplicate_of", twin)
                self.study.tell(trial, state=TrialState.PRUNED)
            except BaseException as exc:
                self._settle(trial, exc, "recording it as a duplicate")
                raise
        raise AssertionError("unreachable")

    def _twin(self, trial: optuna.Trial, key: str) -> int | None:
        """Another trial of the study that completed or runs the plan ``key``."""
        states = (TrialState.COMPLETE, TrialState.RUNNING)
        for other in self.study.get_trials(deepcopy=False, states=states):
            if other.number != trial.number and other.user_attrs.get("plan_key") == key:
                return other.number
        return None

    def _ask_one(self) -> tuple[optuna.Trial, Plan]:
        self._propose()
        trial = self.study.ask()
        try:
            trial.set_user_attr("driver", driver_id())
            plan = self.space.sample(trial)
            trial.set_user_attr("plan", plan.to_dict())
            trial.set_user_attr("plan_key", plan.key)
        except BaseException as exc:
            self._settle(trial, exc, "sampling its plan")
            raise
        return trial, plan

    def tell(self, trial: optuna.Trial, outcome: Outcome) -> None:
        if outcome.screened:
            self._screened(trial, outcome)
            return
        try:
            for name, value in outcome.metrics.items():
                trial.set_user_attr(name, float(value))
            trial.set_user_attr("notes", outcome.notes)
            link(trial, outcome.artifact)
            budget_constraint(trial, outcome.metrics["latency_ms"] - self.budget_ms)
            self.study.tell(trial, [outcome.metrics[o] for o in self.objectives])
        except BaseException as exc:
            self._settle(trial, exc, "recording its outcome")
            raise

    def _screened(self, trial: optuna.Trial, outcome: Outcome) -> None:
        """Predicted over the budget and never trained: pruned, with its estimate."""
        try:
            for name, value in outcome.metrics.items():
                trial.set_user_attr(name, float(value))
            trial.set_user_attr("notes", outcome.notes)
            trial.set_user_attr("screened", True)
            excess = outcome.metrics["screened_latency_ms"] - self.budget_ms
            budget_constraint(trial, excess)
            self.study.tell(trial, state=TrialState.PRUNED)
        except BaseException as exc:
            self._settle(trial, exc, "recording its screening")
            raise

    def fail(self, trial: optuna.Trial, error: str) -> None:
        """A trial that ran and failed (an invalid plan, an error): recorded, not retried."""
        trial.set_user_attr("error", error[:2000])
        self.study.tell(trial, state=TrialState.FAIL)

    def interrupt(self, trial: optuna.Trial, reason: str) -> None:
        """A trial stopped from outside: failed and queued again with the same plan, once."""
        if self._running(trial):
            fail_and_retry(self.study, trial, reason)

    def _running(self, trial: optuna.Trial) -> bool:
        return self.study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING

    def _settle(self, trial: optuna.Trial, exc: BaseException, step: str) -> None:
        """Never leaves a trial RUNNING: an error fails it, an interruption also retries it."""
        if not isinstance(exc, Exception):
            self.interrupt(trial, f"interrupted while {step}")
        elif self._running(trial):
            self.fail(trial, f"{step} failed: {type(exc).__name__}: {exc}")


def now() -> float:
    """The clock a search's time limit is read on (one place, so a test can move it)."""
    return time.monotonic()


DASHBOARD_CONSTRAINTS = "constraints"  # the system attribute optuna-dashboard reads


def budget_constraint(trial: optuna.Trial, excess_ms: float) -> None:
    """The budget as the trial's constraint (``latency - budget``, <= 0 feasible): by name for
    Optuna 5's samplers (``latency_budget``), and as the list optuna-dashboard reads (it tells
    feasible trials from infeasible ones only from that list)."""
    trial.set_constraint("latency_budget", excess_ms)
    trial.storage.set_trial_system_attr(trial._trial_id, DASHBOARD_CONSTRAINTS, [float(excess_ms)])
