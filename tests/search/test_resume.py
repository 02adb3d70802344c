"""Resume: finished trials are never rerun; interrupted ones are failed and retried once."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from edgecompress import EdgeCompressError, search

from ..conftest import TINY  # type: ignore[import-not-found]


def _complete(storage: str, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=storage)
    return [t for t in study.trials if t.state == TrialState.COMPLETE]


def test_resume_runs_only_the_missing_trials(tiny, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    storage = "sqlite:///resume.db"
    search(tiny, trials=3, speedup=1.0, storage=storage, progress=False)
    first = {
        t.number: (t.values, t.datetime_start, t.datetime_complete) for t in _complete(storage)
    }
    assert len(first) == 3

    search(tiny, trials=6, storage=storage, progress=False)  # budget taken from the study
    after = _complete(storage)
    assert len(after) == 6
    for t in after:
        if t.number in first:  # unchanged, not rerun
            assert (t.values, t.datetime_start, t.datetime_complete) == first[t.number]
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert len(study.trials) == 6  # nothing ran that did not complete
    assert [t.user_attrs.get("baseline") for t in after].count("teacher") == 1
    # the resumed run sampled new plans: none repeats one already completed
    keys = [t.user_attrs["plan_key"] for t in after]
    assert len(set(keys)) == len(keys)

    search(tiny, trials=6, speedup=1.0, storage=storage, progress=False)  # already done: no-op
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == 6


def test_resume_refuses_a_changed_space_or_budget(tiny, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    storage = "sqlite:///changed.db"
    search(tiny, trials=2, speedup=1.0, storage=storage, progress=False)
    with pytest.raises(EdgeCompressError) as err:
        search(replace(tiny, exclude=("conv1",)), trials=3, storage=storage, progress=False)
    assert "knob removed: prune.conv1" in str(err.value)
    assert "knob removed: bits.conv1" in str(err.value)
    with pytest.raises(EdgeCompressError, match="objectives"):
        search(
            replace(tiny, objectives=("accuracy", "latency_ms", "size_mb")),
            trials=3,
            storage=storage,
            progress=False,
        )
    with pytest.raises(EdgeCompressError, match="budget_ms"):
        search(tiny, trials=3, speedup=3.0, storage=storage, progress=False)
    assert len(_complete(storage)) == 2  # nothing was run or lost


def test_a_killed_search_is_recovered(workdir: Path) -> None:
    storage = "sqlite:///killed.db"
    cmd = [
        sys.executable,
        "-m",
        "edgecompress.cli",
        "search",
        TINY,
        "--speedup",
        "0.5",
        "--trials",
        "6",  # the retry is queued after the baselines and the three uniform seeds
        "--storage",
        storage,
        "--no-progress",
    ]
    proc = subprocess.Popen(
        cmd, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    running = None
    deadline = time.time() + 120
    while running is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            study = optuna.load_study(study_name="tiny", storage=storage)
        except Exception:  # noqa: BLE001 - not created yet
            continue
        live = [t for t in study.trials if t.state == TrialState.RUNNING]
        running = live[0] if live else None
    assert running is not None, "the search never had a running trial"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    before = {
        t.number: t.state for t in optuna.load_study(study_name="tiny", storage=storage).trials
    }
    assert before[running.number] == TrialState.RUNNING  # left behind by the kill
    done_before = [n for n, s in before.items() if s == TrialState.COMPLETE]

    subprocess.run(cmd, env=os.environ.copy(), check=True, capture_output=True)
    study = optuna.load_study(study_name="tiny", storage=storage)
    by_number = {t.number: t for t in study.trials}
    assert by_number[running.number].state == TrialState.FAIL
    assert "interrupted" in by_number[running.number].user_attrs["error"]
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == running.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    # the same plan: every value the interrupted trial had (the kill may have come while it was
    # still sampling, so compare with what the study kept, not with the snapshot above)
    killed = by_number[running.number]
    known = {**killed.system_attrs.get("fixed_params", {}), **killed.params}
    assert known, "the interrupted trial kept no plan to retry"
    assert {name: retries[0].params.get(name) for name in known} == known
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 6
    assert all(by_number[n].state == TrialState.COMPLETE for n in done_before)
    assert TrialState.RUNNING not in [t.state for t in study.trials]
