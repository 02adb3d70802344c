"""A Ray cluster of its own processes (issue 15): a head that runs no trial and worker nodes
started by ``ray start --address``, as on several machines. The driver joins it with
``--ray-address``; trials run on the worker nodes, store their ONNX files in an S3 bucket
themselves (no disk in common with the driver is needed), and a node killed mid-search loses
nothing: its trials are failed, retried once on the node that replaces it, and the total is
exact."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from edgecompress.testing.ray_cluster import LocalRayCluster

from ..conftest import BUCKET, search_command  # type: ignore[import-not-found]


@pytest.fixture
def cluster(s3) -> Iterator[LocalRayCluster]:  # type: ignore[no-untyped-def]
    base = Path(tempfile.mkdtemp(prefix="ec-ray-"))  # short: Ray's socket paths are limited
    made = LocalRayCluster(base, env=dict(os.environ))  # the S3 server's settings included
    try:
        yield made
    finally:
        left = made.stop()
        shutil.rmtree(base, ignore_errors=True)
        assert not left  # no Ray process of the test's cluster is left


def _trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name="tiny", storage=storage).trials
    except KeyError:  # not created yet
        return []


def test_trials_run_on_worker_nodes_and_survive_one_dying(
    s3, cluster: LocalRayCluster, workdir: Path
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
        cluster.kill_node(first)  # the node dies with a trial on it
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
