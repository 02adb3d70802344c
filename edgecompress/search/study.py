"""The study: created once with its settings, resumed with them checked, recovered after a crash."""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from edgecompress.errors import EdgeCompressError
from edgecompress.experiment import Experiment
from edgecompress.search.heartbeat import beating, on_this_host
from edgecompress.search.meta import StudyMeta, read, write_new
from edgecompress.spaces import Space, baseline_params, describe, on_grid

BASELINES = ("teacher", "int8")
SEED_LEVELS = (0.5, 0.8, 1.0)


def signature(experiment: Experiment, space: Space) -> dict[str, Any]:
    """What must not change on resume: the objectives, the space and the target."""
    return {
        "objectives": list(experiment.study_objectives),
        "space": describe(space),
        "target": experiment.target.to_dict(),
    }


def differences(stored: dict[str, Any], now: dict[str, Any]) -> list[str]:
    diffs = []
    for key in ("objectives", "target"):
        if stored[key] != now[key]:
            diffs.append(f"{key}: study has {stored[key]}, now {now[key]}")
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
    meta = read(study)
    diffs = differences(dict(meta.signature), now)
    if budget_ms is not None and abs(budget_ms - meta.budget_ms) > 1e-9:
        diffs.append(f"budget_ms: study has {meta.budget_ms:.4f}, now {budget_ms:.4f}")
    if diffs:
        raise EdgeCompressError(
            f"study {study.study_name!r} was created with other settings, so it cannot be "
            "resumed with these:\n  " + "\n  ".join(diffs) + "\nRun again with the study's "
            "settings, or start a new study with --study NEW_NAME."
        )


def check_costing(stored: dict[str, Any] | None, now: Any, screen_asked: bool = True) -> None:
    """A resumed study keeps the latency source it was created with."""
    if now is None or stored is None:
        if (now is None) != (stored is None):
            with_table = "with" if stored else "without"
            raise EdgeCompressError(
                f"this study was created {with_table} a latency table; resume it as it was "
                "created (the same --target, --latency and --screen), or start a new --study."
            )
        return
    screen = now.screen if screen_asked else stored["screen"]
    same = (stored["latency"], stored["target"], stored["screen"])
    if same != (now.latency, now.target, screen):
        screening = {True: "with screening", False: "without screening"}
        raise EdgeCompressError(
            f"this study takes its latency {stored['latency']} from target {stored['target']!r}"
            f" {screening[stored['screen']]}; asked now: {now.latency} from {now.target!r} "
            f"{screening[screen]}. Resume it as it was created (the same --target, "
            "--latency and --screen / --no-screen), or start a new --study."
        )


def create(
    storage: BaseStorage, name: str, experiment: Experiment, meta: StudyMeta
) -> optuna.Study:
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        directions=experiment.directions(),  # type: ignore[arg-type]
    )
    with warnings.catch_warnings():  # experimental in Optuna 5: its warning is no news to users
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(experiment.study_objectives))  # optuna-dashboard's labels
    write_new(study, meta)
    return study


def _started(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def driver_id() -> str:
    """``host:pid:start`` of this search process, recorded on every trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}:{_started(os.getpid())}"


def alive(study: optuna.Study, owner: str) -> bool:
    """Whether the search that owns a trial still runs: on this machine, its process (this
    process is not: its trials are an earlier, interrupted search's); on another, its
    heartbeat (``search.heartbeat``)."""
    return _alive_here(owner) if on_this_host(owner) else beating(study, owner)


def _alive_here(owner: str) -> bool:
    """Whether the search that owns a trial still runs on this machine."""
    host, _, rest = owner.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    if start:  # Linux: the same pid and start time, so a reused pid does not count
        return _started(int(pid)) == start
    try:  # elsewhere: the pid alone
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_and_retry(study: optuna.Study, trial: FrozenTrial | optuna.Trial, reason: str) -> None:
    """Marks an interrupted trial failed and queues its plan again, once (never a retry's retry)."""
    frozen = study._storage.get_trial(trial._trial_id)
    study._storage.set_trial_user_attr(frozen._trial_id, "error", reason)
    study.tell(frozen.number, state=TrialState.FAIL)
    if "retry_of" not in frozen.user_attrs:
        attrs: dict[str, Any] = {"retry_of": frozen.number}
        for kept in ("baseline", "allocation"):  # what the plan is, for the front and strategy
            if kept in frozen.user_attrs:
                attrs[kept] = frozen.user_attrs[kept]
        # an enqueued trial's plan is in fixed_params even if it was stopped before sampling
        params = {**frozen.system_attrs.get("fixed_params", {}), **frozen.params}
        study.enqueue_trial(params, user_attrs=attrs)


def recover_interrupted(study: optuna.Study, *, keep: str | None = None) -> list[int]:
    """Fails trials left RUNNING by a search that is gone; retries each once with the same plan.

    A RUNNING trial whose driver still runs (here: its process; elsewhere: its heartbeat) or
    is ``keep`` (the calling driver, during its run) belongs to a live search and is left
    alone. A trial another driver recovered first is skipped. Returns the numbers of the
    trials failed here.
    """
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = str(trial.user_attrs.get("driver", ""))
        if owner == keep or alive(study, owner):
            continue
        try:
            fail_and_retry(study, trial, "interrupted: its search stopped while it ran")
        except (RuntimeError, optuna.exceptions.OptunaError):  # finished by another driver
            continue
        failed.append(trial.number)
    return failed


def uniform_seeds(space: Space) -> dict[str, dict[str, Any]]:
    """What a user does without a search, as the first trials: one ratio for every group.

    Structured pruning (or, in a space without it, low-rank factorization; without both, the
    student knobs) at 50%, 80% and 100% of the way from the identity to the most compressed
    value, in int8 where the space has precision knobs; every other knob at its identity. The
    sampler starts from these.
    """
    knobs = [k for k in space.knobs() if k.kind in ("float", "int") and k.fastest is not None]
    sections = {k.section for k in knobs}
    section = next((s for s in ("prune", "rank", "student") if s in sections), None)
    if section is None:
        return {}
    seeds = {}
    for level in SEED_LEVELS:
        params = baseline_params(space, "int8")
        for k in knobs:
            if k.section == section:
                params[k.name] = on_grid(k, level)
        value = next(params[k.name] for k in knobs if k.section == section)
        seeds[f"uniform {section} {value:g}"] = params
    return seeds


def ensure_baselines(study: optuna.Study, space: Space, *, uniform: bool = True) -> None:
    """Enqueues each baseline, and the uniform seeds where ``uniform``, that no trial of the
    study has run or queued (the int8 baseline only where the space has precision knobs)."""
    present = {t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)}
    quantizable = any(k.section == "bits" and k.kind != "fixed" for k in space.knobs())
    kinds = [kind for kind in BASELINES if quantizable or kind != "int8"]
    wanted = {kind: baseline_params(space, kind) for kind in kinds}
    if uniform:
        wanted.update(uniform_seeds(space))
    for kind, params in wanted.items():
        if kind not in present:
            study.enqueue_trial(params, user_attrs={"baseline": kind})
