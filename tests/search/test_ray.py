"""The Ray Tune path: two workers, the study as the only record, no Ray process left behind."""

import signal
import subprocess
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from edgecompress import search
from edgecompress.search.study import driver_id
from edgecompress.testing.ray_cluster import ray_pids

from ..conftest import search_command  # type: ignore[import-not-found]


def _left_behind(before: set[int], timeout_s: float = 30.0) -> set[int]:
    """Ray processes started since ``before`` still alive after ``timeout_s`` (ray.shutdown
    signals them and does not wait for them to exit)."""
    deadline = time.monotonic() + timeout_s
    while (new := ray_pids() - before) and time.monotonic() < deadline:
        time.sleep(0.5)
    return new


def test_two_workers_on_ray(tiny, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    before = ray_pids()
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
    artifacts = Path(result.meta.artifacts)
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


def test_a_driver_killed_by_sigkill_leaves_no_ray_process_or_folder(workdir: Path) -> None:
    """Killed without a chance to clean (kill -9, the OOM killer), a driver's local Ray and
    work folder are removed by its watchdog, a process of its own."""
    scratch = Path(tempfile.gettempdir())
    before, folders = ray_pids(), set(scratch.glob("edgecompress-ray-*"))
    storage = "sqlite:///killed.db"
    driver = subprocess.Popen(search_command(storage, 6) + ["--workers", "2"])
    deadline = time.monotonic() + 180
    while not _running(storage):
        assert driver.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    started = set(scratch.glob("edgecompress-ray-*")) - folders
    assert len(started) == 1 and ray_pids() - before  # its folder, its local Ray
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    folder = started.pop()
    assert not _left_behind(before)
    deadline = time.monotonic() + 10  # removed once its processes are gone
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not folder.exists()


def _running(storage: str) -> bool:
    try:
        study = optuna.load_study(study_name="tiny", storage=storage)
    except KeyError:  # not created yet
        return False
    return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
