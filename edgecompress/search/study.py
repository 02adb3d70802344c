"""The study: created once with its settings, resumed with them checked, recovered after a crash."""

from __future__ import annotations

import datetime as dt
import os
import socket
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from edgecompress.errors import EdgeCompressError
from edgecompress.experiment import Experiment
from edgecompress.search.storage import META, study_names
from edgecompress.spaces import INT8, Space, describe

BASELINES = ("teacher", "int8")


def sampler(seed: int) -> optuna.samplers.BaseSampler:
    """Multi-objective TPE; it reads each trial's latency-budget constraint (``set_constraint``)."""
    return optuna.samplers.TPESampler(
        seed=seed, multivariate=True, constant_liar=True, n_startup_trials=8
    )


def signature(experiment: Experiment, space: Space) -> dict[str, Any]:
    """What must not change on resume: the objectives and the space."""
    return {"objectives": list(experiment.objectives), "space": describe(space)}


def differences(stored: dict[str, Any], now: dict[str, Any]) -> list[str]:
    diffs = []
    if stored["objectives"] != now["objectives"]:
        diffs.append(f"objectives: study has {stored['objectives']}, now {now['objectives']}")
    old = {k["name"]: k for k in stored["space"]}
    new = {k["name"]: k for k in now["space"]}
    diffs += [f"knob removed: {n}" for n in old if n not in new]
    diffs += [f"knob added: {n}" for n in new if n not in old]
    diffs += [
        f"knob changed: {n}: study has {_short(old[n])}, now {_short(new[n])}"
        for n in old
        if n in new and old[n] != new[n]
    ]
    return diffs


def _short(knob: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in knob.items() if k not in ("name", "layers"))


def check_resume(study: optuna.Study, now: dict[str, Any], budget_ms: float | None) -> None:
    meta = study.user_attrs[META]
    diffs = differences(meta["signature"], now)
    if budget_ms is not None and abs(budget_ms - meta["budget_ms"]) > 1e-9:
        diffs.append(f"budget_ms: study has {meta['budget_ms']:.4f}, now {budget_ms:.4f}")
    if diffs:
        raise EdgeCompressError(
            f"study {study.study_name!r} was created with other settings, so it cannot be "
            "resumed with these:\n  " + "\n  ".join(diffs) + "\nRun again with the study's "
            "settings, or start a new study with --study NEW_NAME."
        )


def create(
    storage: BaseStorage, name: str, experiment: Experiment, meta: dict[str, Any]
) -> optuna.Study:
    if name in study_names(storage):
        raise EdgeCompressError(f"study {name!r} exists already")  # guarded by the caller
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        directions=experiment.directions(),
    )
    meta = {**meta, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    study.set_user_attr(META, meta)
    return study


def driver_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive_here(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_and_retry(study: optuna.Study, trial: FrozenTrial | optuna.Trial, reason: str) -> None:
    """Marks an interrupted trial failed and queues its plan again, once (never a retry's retry)."""
    storage = study._storage
    storage.set_trial_user_attr(trial._trial_id, "error", reason)
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    if "retry_of" not in trial.user_attrs:
        attrs: dict[str, Any] = {"retry_of": trial.number}
        if "baseline" in trial.user_attrs:
            attrs["baseline"] = trial.user_attrs["baseline"]
        study.enqueue_trial(trial.params, user_attrs=attrs)


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Fails trials left RUNNING by a search that is gone; retries each once with the same plan.

    A RUNNING trial whose driver still runs on this machine belongs to a live search and is
    left alone. Returns the numbers of the trials failed here.
    """
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _alive_here(str(trial.user_attrs.get("driver", ""))):
            fail_and_retry(study, trial, "interrupted: its search stopped while it ran")
            failed.append(trial.number)
    return failed


def baseline_params(space: Space, kind: str) -> dict[str, Any]:
    """The uncompressed teacher, or the teacher with every layer int8."""
    params = {k.name: k.identity for k in space.knobs() if k.kind != "fixed"}
    if kind == "int8":
        params.update({n: INT8 for n in params if n.startswith("bits.")})
    return params


def ensure_baselines(study: optuna.Study, space: Space) -> None:
    """Enqueues each baseline that no trial of the study has run or queued."""
    present = {t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)}
    for kind in BASELINES:
        if kind not in present:
            study.enqueue_trial(baseline_params(space, kind), user_attrs={"baseline": kind})
