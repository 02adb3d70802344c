"""A Ray cluster of its own processes (issue 15): a head that runs no trial and worker nodes
started by ``ray start --address``, as on several machines. The driver joins it with
``--ray-address``; trials run on the worker nodes, store their ONNX files in an S3 bucket
themselves (no disk in common with the driver is needed), and a node killed mid-search loses
nothing: its trials are failed, retried once on the node that replaces it, and the total is
exact."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ..conftest import BUCKET, search_command  # type: ignore[import-not-found]

RAY = str(Path(sys.executable).with_name("ray"))
# the head notices a dead node within about a second (Ray's default waits about 30)
FAST_HEALTH_CHECK = {
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "300",
    "RAY_health_check_timeout_ms": "300",
    "RAY_health_check_failure_threshold": "3",
}


def _ray_pids() -> set[int]:
    """Live Ray processes of this machine: raylets, GCS servers, Ray workers and agents."""
    out = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True)
    found = set()
    for line in out.stdout.splitlines():
        pid, stat, args = (line.split(None, 2) + ["", ""])[:3]
        if stat.startswith("Z"):
            continue
        if args.startswith("ray::") or any(k in args for k in ("raylet", "gcs_server", "/ray/")):
            found.add(int(pid))
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A head with no CPUs and worker nodes, each started as its own process tree."""

    def __init__(self, base: Path) -> None:
        self.address = f"127.0.0.1:{_free_port()}"
        self.env = {**os.environ, **FAST_HEALTH_CHECK}  # the S3 server's settings included
        self.before = _ray_pids()
        port = self.address.split(":")[1]
        head = ["--head", "--num-cpus", "0", "--port", port, "--temp-dir", str(base)]
        self._ray("start", *head, "--include-dashboard", "false")

    def _ray(self, *args: str) -> None:
        common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
        subprocess.run(
            [RAY, *args, *common], env=self.env, check=True, capture_output=True, timeout=120
        )

    def add_node(self) -> int:
        """Starts a worker node of 2 CPUs; returns its raylet's pid."""
        raylets = set(_raylets())
        self._ray("start", "--address", self.address, "--num-cpus", "2")
        new = set(_raylets()) - raylets
        assert len(new) == 1
        return new.pop()

    def stop(self) -> None:
        for pid in _ray_pids() - self.before:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _raylets() -> list[int]:
    out = subprocess.run(["pgrep", "-x", "raylet"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.fixture
def cluster(s3) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    base = Path(tempfile.mkdtemp(prefix="ec-ray-"))  # short: Ray's socket paths are limited
    made = Cluster(base)
    try:
        yield made
    finally:
        made.stop()
        deadline = time.monotonic() + 30
        while _ray_pids() - made.before and time.monotonic() < deadline:
            time.sleep(0.5)
        shutil.rmtree(base, ignore_errors=True)
        assert not _ray_pids() - made.before  # no Ray process of the test's cluster is left


def _trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name="tiny", storage=storage).trials
    except KeyError:  # not created yet
        return []


def test_trials_run_on_worker_nodes_and_survive_one_dying(
    s3, cluster: Cluster, workdir: Path
) -> None:  # type: ignore[no-untyped-def]
    storage = f"sqlite:///{workdir / 'cluster.db'}"
    first = cluster.add_node()
    command = search_command(storage, trials=6) + [
        "--workers",
        "2",
        "--ray-address",
        cluster.address,
        "--artifacts",
        f"s3://{BUCKET}/team",
    ]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not any(t.state == TrialState.COMPLETE for t in _trials(storage)):
            assert driver.poll() is None and time.monotonic() < deadline, driver.stdout
            time.sleep(0.5)
        while not any(t.state == TrialState.RUNNING for t in _trials(storage)):
            assert driver.poll() is None and time.monotonic() < deadline, driver.stdout
            time.sleep(0.2)
        os.kill(first, signal.SIGKILL)  # the node dies with a trial on it
        cluster.add_node()  # and another joins the cluster
        out, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out
    trials = _trials(storage)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(done) == 6 and not [t for t in trials if t.state == TrialState.RUNNING]
    assert failed and all("node" in t.user_attrs["error"] for t in failed)  # the lost node's
    retried = {t.user_attrs.get("retry_of") for t in done}
    assert {t.number for t in failed} <= retried  # each trial the node took is run again, once
    assert {"teacher", "int8"} <= {t.user_attrs.get("baseline") for t in done}
    nodes = {t.user_attrs["notes"]["ray_node"] for t in done}
    assert len(nodes) == 2  # trials ran on both worker nodes (the head has no CPU)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {f"team/tiny/{t.user_attrs['artifact_id']}" for t in done} <= keys
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    export = subprocess.run(
        [sys.executable, "-m", "edgecompress.cli", "export", "--study", "tiny"]
        + ["--storage", storage, "--trial", str(done[-1].number), "-o", "m.onnx"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
    )
    assert export.returncode == 0, export.stdout + export.stderr
    assert (elsewhere / "m.onnx").stat().st_size > 0
