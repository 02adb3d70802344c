"""The Ray Tune path: two workers, the study as the only record, no Ray process left behind."""

import subprocess
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from edgecompress import search
from edgecompress.search.study import driver_id


def _ray_processes() -> set[str]:
    """The pids of live raylet and gcs_server processes (zombies are gone already)."""
    out = subprocess.run(["ps", "-eo", "pid,stat,comm"], capture_output=True, text=True).stdout
    found = set()
    for line in out.splitlines()[1:]:
        pid, stat, comm = (line.split(None, 2) + ["", ""])[:3]
        if comm.strip() in ("raylet", "gcs_server") and not stat.startswith("Z"):
            found.add(pid)
    return found


def _left_behind(before: set[str], timeout_s: float = 30.0) -> set[str]:
    """Ray processes started since ``before`` still alive after ``timeout_s`` (ray.shutdown
    signals them and does not wait for them to exit)."""
    deadline = time.monotonic() + timeout_s
    while (new := _ray_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.5)
    return new


def test_two_workers_on_ray(tiny, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    before = _ray_processes()
    # the executor runs whatever the strategy proposes (the default strategy's profile costs a
    # minute here; its proposals in flight together are tested in test_strategies)
    result = search(
        tiny,
        trials=4,
        speedup=0.5,
        workers=2,
        storage="sqlite:///ray.db",
        progress=False,
        strategy="tpe",
    )
    assert len(result.trials) == 4
    assert set(result.trials["baseline"]) >= {"teacher", "int8"}
    study = optuna.load_study(study_name="tiny", storage="sqlite:///ray.db")
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 4
    assert TrialState.RUNNING not in [t.state for t in study.trials]
    assert study.user_attrs[f"heartbeat:{driver_id()}"] == 0.0  # beat, then marked gone
    # each worker stored its trial's ONNX file, under the id the driver linked, and nothing else
    artifacts = Path(result.meta["artifacts"])
    stored = {file.name for file in artifacts.iterdir()}
    assert stored == {result.artifacts[n] for n in result.trials["trial"]}
    assert all(
        t.user_attrs["notes"]["ray_node"] for t in study.get_trials(states=(TrialState.COMPLETE,))
    )
    # two trials ran at the same time on the two workers (their time spans overlap)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    spans = sorted((t.datetime_start, t.datetime_complete) for t in done)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False))
    assert not _left_behind(before)  # the local Ray was shut down
