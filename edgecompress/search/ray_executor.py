"""Trials in parallel on Ray Tune; Optuna's storage stays the only ledger.

A Tune ``Searcher`` asks the study for each trial (the plan is sampled here, in the driver) and
tells the study each outcome; Tune only schedules the trainable on a worker with one CPU. Tune's
own experiment folder is temporary and deleted at the end: it never decides what ran. Workers
import the experiment from its ``FILE.py:NAME`` reference; only the reference, the plan and
metrics travel; the worker stores the ONNX file in the study's artifact location itself (a
shared folder or a bucket), so a worker on another node needs no disk in common with the
driver.
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

from edgecompress.errors import EdgeCompressError, TrialsKeepFailing
from edgecompress.experiment import Experiment
from edgecompress.search.executors import Loop, OnDone, describe_error
from edgecompress.search.ledger import Ledger
from edgecompress.search.trial import Outcome, run_trial_by_ref
from edgecompress.search.watchdog import watch
from edgecompress.targets import Target

RESULT_KEY = "edgecompress_outcome"


def _trainable(config: dict[str, Any]) -> dict[str, Any]:
    """Runs on a Ray worker. A failing trial returns its error (Tune's error path is left for
    crashes of the worker itself). One JSON string keeps our result apart from Tune's keys."""
    import torch

    torch.set_num_threads(1)  # one CPU per trial, as Tune reserved
    try:
        outcome = run_trial_by_ref(
            config["ref"],
            config["plan"],
            costing=config["costing"],
            target=config["target"],
            **config["job"],
        )
    except Exception as exc:  # noqa: BLE001 - recorded on the trial by the driver
        return {RESULT_KEY: json.dumps({"error": describe_error(exc)})}
    import ray

    data = {
        "metrics": outcome.metrics,
        "artifact": outcome.artifact,
        "notes": {**outcome.notes, "ray_node": ray.get_runtime_context().get_node_id()},
        "screened": outcome.screened,
    }
    return {RESULT_KEY: json.dumps(data)}


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
    """Runs trials ``workers`` at a time until ``total`` are complete in the study (or its
    time limit has passed: the running trials finish, no other starts)."""
    _quiet_ray_environment(local=address is None)
    import ray
    from ray import tune

    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    work = Path(tempfile.mkdtemp(prefix="edgecompress-ray-"))
    watchdog = watch(work)  # cleans the folder and a local Ray if this process is killed
    init: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
    }
    if address is None:
        init.update(address="local", num_cpus=workers, _temp_dir=str(work / "ray"))
    else:
        init.update(address=address)
    searcher = _searcher_class()(ledger, experiment.ref, experiment.target, total, on_done)
    try:
        _init(ray, init, address)
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
        watchdog.kill()
        watchdog.wait()
    if not ledger.enough(total):
        if searcher.stop_error:
            raise searcher.stop_error
        if not ledger.out_of_time():  # the time limit ends a search early; nothing else does
            raise KeyboardInterrupt  # Tune took the Ctrl-C and returned early


def _init(ray: Any, init: dict[str, Any], address: str | None) -> None:
    try:
        ray.init(**init)
    except Exception as exc:  # noqa: BLE001 - e.g. an address that cannot be joined
        raise EdgeCompressError(
            f"Ray could not be started or joined (address {address or 'local'}): "
            f"{type(exc).__name__}: {exc}. Check --ray-address, or leave it out to start a "
            "local Ray. The study is kept; run again to resume."
        ) from None


def _searcher_class() -> type:
    from ray.tune.search import Searcher

    class LedgerSearcher(Searcher):
        """Asks the Optuna study for trials and tells it their outcomes."""

        def __init__(
            self, ledger: Ledger, ref: str | None, target: Target, total: int, on_done: OnDone
        ) -> None:
            super().__init__(metric=None, mode=None)
            self.ledger, self.ref, self.total = ledger, ref, total
            self.target = target.to_dict()  # the driver's (its --runtime), not the file's
            self.loop = Loop(ledger, on_done)
            self.live: dict[str, optuna.Trial] = {}
            self.stop_error: Exception | None = None

        def set_search_properties(self, metric: Any, mode: Any, config: Any, **spec: Any) -> bool:
            return True  # the space lives in the ledger

        def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
            enough = self.ledger.enough(self.total, mine=len(self.live))
            if self.stop_error or enough or self.ledger.out_of_time():
                # None: ask again later (a running trial may still fail); FINISHED: done
                return None if self.live and not self.stop_error else Searcher.FINISHED
            trial, plan = self.ledger.ask()
            self.live[trial_id] = trial
            return {
                "ref": self.ref,
                "target": self.target,
                "plan": plan.to_dict(),
                "number": trial.number,
                "costing": costing.to_dict() if (costing := self.ledger.costing) else None,
                "job": self.loop.job(trial),
            }

        def on_trial_complete(
            self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
        ) -> None:
            if error or trial_id not in self.live:
                return  # a crashed worker is told by the callback, which has the message
            data: dict[str, Any] = (
                json.loads(result[RESULT_KEY])
                if result and RESULT_KEY in result
                else {"error": "the trial ended on Ray without a result"}
            )
            if "error" in data:
                self.fail(trial_id, data["error"])
                return
            trial = self.live.pop(trial_id)
            outcome = Outcome(
                data["metrics"], data["artifact"], data["notes"], data.get("screened", False)
            )
            try:
                self.loop.told(trial, outcome)
            except TrialsKeepFailing as exc:  # stop asking; raised once Tune ends
                self.stop_error = exc

        def lost(self, trial_id: str, message: str) -> None:
            """The trial's worker or its node died under it: not the plan's fault, so the trial
            is failed and queued again with the same plan, once (whichever node runs it)."""
            trial = self.live.pop(trial_id, None)
            if trial is not None:
                self.ledger.interrupt(trial, message)

        def fail(self, trial_id: str, message: str) -> None:
            trial = self.live.pop(trial_id, None)
            if trial is None:
                return
            try:
                self.loop.failed(trial, message)
            except TrialsKeepFailing as exc:  # stop asking; raised once Tune ends
                self.stop_error = exc

        def fail_unfinished(self, reason: str) -> None:
            for trial_id in list(self.live):
                self.ledger.interrupt(self.live.pop(trial_id), reason)

    return LedgerSearcher


def _errors_callback(tune: Any, searcher: Any) -> Any:
    class ErrorsToLedger(tune.Callback):
        """Tells the study a trial whose Ray worker crashed, with the error: retried once when
        the worker process or its node died (a node lost from the cluster), failed otherwise."""

        def on_trial_error(
            self, iteration: int, trials: list[Any], trial: Any, **info: Any
        ) -> None:
            try:
                text = Path(trial.error_file).read_text()
            except (OSError, TypeError):
                text = str(trial.get_error() or "no error text")
            lines = [line for line in text.strip().splitlines() if line.strip()]
            message = "the Ray worker failed:\n" + "\n".join(lines[-6:])
            if _worker_died(trial):
                searcher.lost(trial.trial_id, message)
            else:
                searcher.fail(trial.trial_id, message)

    return ErrorsToLedger()


def _worker_died(trial: Any) -> bool:
    """True when Tune recorded the trial's error as its actor dying (``RayActorError``: the
    worker process was killed, or its node left the cluster), not as an error the trial raised."""
    import cloudpickle
    from ray.exceptions import RayActorError

    try:
        with open(trial.pickled_error_file, "rb") as file:
            error = cloudpickle.load(file)
    except Exception:  # noqa: BLE001 - no pickled error: Tune's own failure, not a lost node
        return False
    return isinstance(error, RayActorError)
