"""Trials in parallel on Ray Tune; Optuna's storage stays the only ledger.

A Tune ``Searcher`` asks the study for each trial (the plan is sampled here, in the driver) and
tells the study each outcome; Tune only schedules the trainable on a worker with one CPU. Tune's
own experiment folder is temporary and deleted at the end: it never decides what ran. Workers
import the experiment from its ``FILE.py:NAME`` reference; only the reference, the plan and
metrics travel, and the ONNX file is left in the study's staging folder.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

import optuna

from edgecompress.experiment import Experiment
from edgecompress.search.executors import FailureCount, OnDone
from edgecompress.search.ledger import Ledger
from edgecompress.search.study import fail_and_retry
from edgecompress.search.trial import Outcome, run_trial_by_ref

RESULT_KEY = "edgecompress_outcome"


def _trainable(config: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)  # one CPU per trial, as Tune reserved
    outcome = run_trial_by_ref(
        config["ref"],
        config["plan"],
        reference_ms=config["reference_ms"],
        staging=config["staging"],
    )
    # one JSON string: Tune adds its own keys to results, ours stay apart from them
    return {
        RESULT_KEY: json.dumps(
            {"metrics": outcome.metrics, "onnx_path": outcome.onnx_path, "notes": outcome.notes}
        )
    }


def _quiet_ray_environment(local: bool) -> None:
    """Must run before ``import ray``: no usage stats, no per-trial log files, quiet output."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "0")
    if local and "RAY_AUTH_TOKEN" not in os.environ:
        # a new local cluster would otherwise write a token to ~/.ray; keep it in this process
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def run_on_ray(
    ledger: Ledger,
    experiment: Experiment,
    total: int,
    on_done: OnDone,
    *,
    workers: int,
    address: str | None,
) -> None:
    """Runs trials ``workers`` at a time until ``total`` are complete in the study."""
    _quiet_ray_environment(local=address is None)
    import ray
    from ray import tune

    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    work = Path(tempfile.mkdtemp(prefix="edgecompress-ray-"))
    init: dict[str, Any] = dict(
        include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
    )
    if address is None:
        init.update(address="local", num_cpus=workers, _temp_dir=str(work / "ray"))
    else:
        init.update(address=address)
    searcher = _searcher_class(tune)(ledger, experiment.ref, total, on_done)
    try:
        ray.init(**init)
        tuner = tune.Tuner(
            tune.with_resources(_trainable, {"cpu": 1}),
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                num_samples=-1,
                max_concurrent_trials=workers,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name="edgecompress",
                storage_path=str(work / "tune"),
                verbose=0,
                callbacks=[_errors_callback(tune, searcher)],
                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            ),
        )
        tuner.fit()
    finally:
        searcher.fail_unfinished("interrupted: the search was stopped")
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    if ledger.completed() < total and searcher.stop_error:
        raise searcher.stop_error


def _searcher_class(tune: Any) -> type:
    from ray.tune.search import Searcher

    class LedgerSearcher(Searcher):  # type: ignore[misc]
        """Asks the Optuna study for trials and tells it their outcomes."""

        def __init__(self, ledger: Ledger, ref: str | None, total: int, on_done: OnDone) -> None:
            super().__init__(metric=None, mode=None)
            self.ledger, self.ref, self.total, self.on_done = ledger, ref, total, on_done
            self.live: dict[str, optuna.Trial] = {}
            self.failures = FailureCount()
            self.stop_error: Exception | None = None

        def set_search_properties(self, metric: Any, mode: Any, config: Any, **spec: Any) -> bool:
            return True  # the space lives in the ledger

        def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
            if self.stop_error or self.ledger.completed() + len(self.live) >= self.total:
                return Searcher.FINISHED if not self.live else None
            trial, plan = self.ledger.ask()
            self.live[trial_id] = trial
            return {
                "ref": self.ref,
                "plan": plan.to_dict(),
                "number": trial.number,
                "reference_ms": self.ledger.reference_ms,
                "staging": self.ledger.staging,
            }

        def on_trial_complete(
            self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
        ) -> None:
            if error or trial_id not in self.live:
                return  # errors are told by the callback, which has the message
            trial = self.live.pop(trial_id)
            data = json.loads((result or {})[RESULT_KEY])
            outcome = Outcome(data["metrics"], data["onnx_path"], data["notes"])
            self.ledger.tell(trial, outcome)
            self.failures.record(None)
            self.on_done(trial, outcome)

        def fail(self, trial_id: str, message: str) -> None:
            trial = self.live.pop(trial_id, None)
            if trial is None:
                return
            self.ledger.fail(trial, message)
            self.on_done(trial, None)
            try:
                self.failures.record(message)
            except Exception as exc:  # noqa: BLE001 - stop asking; raised after Tune ends
                self.stop_error = exc

        def fail_unfinished(self, reason: str) -> None:
            for trial_id in list(self.live):
                fail_and_retry(self.ledger.study, self.live.pop(trial_id), reason)

    return LedgerSearcher


def _errors_callback(tune: Any, searcher: Any) -> Any:
    class ErrorsToLedger(tune.Callback):  # type: ignore[misc]
        """Tells the study a failed trial with its error (the searcher does not get it)."""

        def on_trial_error(
            self, iteration: int, trials: list[Any], trial: Any, **info: Any
        ) -> None:
            try:
                text = Path(trial.error_file).read_text()
            except (OSError, TypeError):
                text = str(trial.get_error() or "the trial failed on its Ray worker")
            searcher.fail(trial.trial_id, _user_error(text))

    return ErrorsToLedger()


def _user_error(text: str) -> str:
    """The last lines of a Ray traceback, which name the user's exception."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    tail = "\n".join(lines[-6:])
    return (
        tail if "InvalidPlan" not in tail else "InvalidPlan: " + lines[-1].split(":", 1)[-1].strip()
    )
