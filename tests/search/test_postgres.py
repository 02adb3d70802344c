"""Two drivers on one study in a real PostgreSQL server (issue 15), started by the test itself
from the ``pgserver`` package (a PostgreSQL build on PyPI; nothing installed by hand): one
driver is killed by ``kill -9`` while its trial runs, the other recovers that trial and
finishes the study. Exact total, no plan completed twice, nothing left RUNNING, and the
exported model found from another working directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ..conftest import search_command  # type: ignore[import-not-found]

TRIALS = 7


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def _driver(storage: str, log: Path) -> subprocess.Popen[bytes]:
    cmd = search_command(storage, TRIALS)
    with open(log, "w") as err:
        return subprocess.Popen(cmd, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=err)


def _running_trial_of(storage: str, pid: int) -> int | None:
    try:
        study = optuna.load_study(study_name="tiny", storage=storage)
    except KeyError:  # not created yet
        return None
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if f":{pid}:" in str(t.user_attrs.get("driver", "")):
            return t.number
    return None


def test_two_drivers_one_killed_mid_trial_on_postgresql(postgres: str, workdir: Path) -> None:
    first = _driver(postgres, workdir / "a.log")
    second = _driver(postgres, workdir / "b.log")
    killed = None
    deadline = time.time() + 300
    while killed is None and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
        killed = _running_trial_of(postgres, first.pid)
    assert killed is not None, (workdir / "a.log").read_text()[-2000:]
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert second.wait(timeout=600) == 0, (workdir / "b.log").read_text()[-3000:]

    study = optuna.load_study(study_name="tiny", storage=postgres)
    by_number = {t.number: t for t in study.trials}
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == TRIALS  # exactly the total asked for
    assert TrialState.RUNNING not in [t.state for t in study.trials]
    keys = [t.user_attrs["plan_key"] for t in complete]
    assert len(set(keys)) == len(keys)  # no plan completed twice
    # the killed driver's trial: failed as interrupted, its plan completed once by the other
    assert by_number[killed].state == TrialState.FAIL
    assert "interrupted" in by_number[killed].user_attrs["error"]
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert f":{second.pid}:" in retries[0].user_attrs["driver"]
    # the second driver beat while it ran and marked itself gone
    beats = {k: v for k, v in study.user_attrs.items() if k.startswith("heartbeat:")}
    assert any(f":{second.pid}:" in k and v == 0.0 for k, v in beats.items())

    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    exported = subprocess.run(
        [sys.executable, "-m", "edgecompress.cli", "export", "--study", "tiny"]
        + ["--storage", postgres, "--best", "-o", "m.onnx"],
        cwd=elsewhere,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert (elsewhere / "m.onnx").stat().st_size > 0
