"""Resume: finished trials are never rerun; interrupted ones are failed and retried once."""

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from edgecompress import EdgeCompressError, search
from edgecompress.search.artifacts import PENDING, link, new_id, remove_orphans

from ..conftest import search_command  # type: ignore[import-not-found]


def _complete(storage: str, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=storage)
    return [t for t in study.trials if t.state == TrialState.COMPLETE]


def test_resume_runs_only_the_missing_trials(tiny, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    storage = "sqlite:///resume.db"
    # tpe: resuming is the engine's, whatever the strategy (the default one's profile costs a
    # minute here and is tested in test_strategies)
    search(tiny, trials=3, speedup=1.0, storage=storage, progress=False, strategy="tpe")
    first = {
        t.number: (t.values, t.datetime_start, t.datetime_complete) for t in _complete(storage)
    }
    assert len(first) == 3

    search(tiny, trials=6, storage=storage, progress=False, strategy="tpe")  # budget: the study's
    after = _complete(storage)
    assert len(after) == 6
    for t in after:
        if t.number in first:  # unchanged, not rerun
            assert (t.values, t.datetime_start, t.datetime_complete) == first[t.number]
    study = optuna.load_study(study_name="tiny", storage=storage)
    # nothing ran that did not complete, but plans measured over the budget before training
    # (screened: pruned, never fine-tuned) and plans sampled again (duplicates: never run)
    others = [t for t in study.trials if t.state != TrialState.COMPLETE]
    assert all(t.state == TrialState.PRUNED for t in others)
    assert all(t.user_attrs.get("screened") or "duplicate_of" in t.user_attrs for t in others)
    assert [t.user_attrs.get("baseline") for t in after].count("teacher") == 1
    # the search beat while it ran (for drivers elsewhere) and marked itself gone when done
    from edgecompress.search.study import driver_id

    assert study.user_attrs[f"heartbeat:{driver_id()}"] == 0.0
    # the resumed run sampled new plans: none repeats one already completed
    keys = [t.user_attrs["plan_key"] for t in after]
    assert len(set(keys)) == len(keys)

    count = len(study.trials)
    search(tiny, trials=6, speedup=1.0, storage=storage, progress=False, strategy="tpe")  # no-op
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == count


def test_resume_refuses_a_changed_space_or_budget(tiny, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    storage = "sqlite:///changed.db"
    search(tiny, trials=2, speedup=1.0, storage=storage, progress=False, strategy="tpe")
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


def _kill_while_a_trial_runs(cmd: list[str], storage: str) -> int | None:
    """Starts the search, SIGKILLs it once a trial is RUNNING; the number of the trial the kill
    left RUNNING (None if the kill fell between one trial's end and the next one's start)."""
    log = Path(storage.removeprefix("sqlite:///") + ".log")
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=err)
        seen = False
        deadline = time.time() + 600  # imports, the reference's timing and the teacher first
        while not seen and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            try:
                study = optuna.load_study(study_name="tiny", storage=storage)
            except Exception:  # noqa: BLE001 - not created yet
                continue
            seen = any(t.state == TrialState.RUNNING for t in study.trials)
        assert seen, f"the search never had a running trial: {log.read_text()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = optuna.load_study(study_name="tiny", storage=storage).trials
    running = [t.number for t in left if t.state == TrialState.RUNNING]
    assert len(running) <= 1  # one trial at a time in a search with one worker
    return running[0] if running else None


def test_a_killed_search_is_recovered(workdir: Path) -> None:
    for attempt in range(3):
        storage = f"sqlite:///killed{attempt}.db"
        # 6 trials: the retry is queued after the baselines and the three uniform seeds
        cmd = search_command(storage, 6)
        interrupted = _kill_while_a_trial_runs(cmd, storage)
        if interrupted is not None:
            break
    assert interrupted is not None, "three kills in a row fell between two trials"
    before = {
        t.number: t.state for t in optuna.load_study(study_name="tiny", storage=storage).trials
    }
    done_before = [n for n, s in before.items() if s == TrialState.COMPLETE]

    subprocess.run(cmd, env=os.environ.copy(), check=True, capture_output=True)
    study = optuna.load_study(study_name="tiny", storage=storage)
    by_number = {t.number: t for t in study.trials}
    assert by_number[interrupted].state == TrialState.FAIL
    assert "interrupted" in by_number[interrupted].user_attrs["error"]
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == interrupted]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    # the same plan: every value the interrupted trial had (the kill may come while it is still
    # sampling: what the study kept of it, its queued plan and what it had sampled)
    killed = by_number[interrupted]
    known = {**killed.system_attrs.get("fixed_params", {}), **killed.params}
    assert known, "the interrupted trial kept no plan to retry"
    assert {name: retries[0].params.get(name) for name in known} == known
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 6
    assert all(by_number[n].state == TrialState.COMPLETE for n in done_before)
    assert TrialState.RUNNING not in [t.state for t in study.trials]


def test_a_time_limit_stops_starting_trials_and_the_study_resumes(
    tiny, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """``timeout_s``: once it has passed no trial starts; what finished is kept and a later run
    resumes from it (and removes a file stored for a trial that never completed). The clock is
    moved past the limit once two trials are complete."""
    from edgecompress.search import ledger

    storage = "sqlite:///timeout.db"

    def clock() -> float:
        done = len(_complete(storage)) if Path("timeout.db").exists() else 0
        return 1e12 if done >= 2 else 0.0

    real = ledger.now
    monkeypatch.setattr(ledger, "now", clock)
    result = search(
        tiny, trials=4, speedup=1.0, storage=storage, progress=False, timeout_s=60, strategy="tpe"
    )
    assert len(_complete(storage)) == 2 == len(result.trials)
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert result.stopped is not None and "1m" in result.stopped and "2 of 4" in result.stopped
    first = {t.number: t.datetime_complete for t in _complete(storage)}
    # a worker stored its trial's file, then the driver was killed before linking it (the
    # trial was failed by the heartbeat): the next run of the study removes the file
    killed = study.ask()
    orphan = Path(result.meta.artifacts) / new_id(killed)
    orphan.write_bytes(b"onnx")
    study.tell(killed, state=TrialState.FAIL)
    monkeypatch.setattr(ledger, "now", real)
    again = search(tiny, trials=3, storage=storage, progress=False, strategy="tpe")
    assert again.stopped is None and len(_complete(storage)) == 3
    assert not orphan.exists()
    stored = [Path(again.meta.artifacts) / a for a in again.artifacts.values()]
    assert len(stored) == 3 and all(file.exists() for file in stored)
    later = {t.number: t.datetime_complete for t in _complete(storage)}
    assert all(later[n] == finished for n, finished in first.items())  # not rerun
    with pytest.raises(EdgeCompressError, match="--timeout must be a positive time"):
        search(tiny, trials=4, storage=storage, progress=False, timeout_s=float("nan"))


def test_only_files_of_trials_that_never_completed_are_removed(tmp_path: Path) -> None:
    study = optuna.create_study()
    where = str(tmp_path)
    failed, running, done, never = study.ask(), study.ask(), study.ask(), study.ask()
    for trial in (failed, running, done):
        (tmp_path / new_id(trial)).write_bytes(b"onnx")
    new_id(never)  # failed before its worker stored anything
    link(done, done.user_attrs[PENDING])
    study.tell(done, 1.0)
    study.tell(failed, state=TrialState.FAIL)
    study.tell(never, state=TrialState.FAIL)
    assert remove_orphans(study, where) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [running.user_attrs[PENDING], done.user_attrs[PENDING]]
    )  # a running trial's file waits for its tell; a completed one's is the trial's
    meta = optuna.artifacts.get_all_artifact_meta(study.trials[2], storage=study._storage)
    assert [m.artifact_id for m in meta] == [done.user_attrs[PENDING]]  # linked as Optuna does
