"""Soak run (issue 15): several drivers on one PostgreSQL study, trials on a Ray cluster of
separate node processes, ONNX files in an S3 bucket; one driver killed with SIGKILL at a random
moment and restarted, one Ray worker node killed and replaced.

    .venv/bin/python bench/soak.py --trials 60 --drivers 3 --workers 2 --seeds 0 1 2

Everything runs on this machine, started by the script itself: a PostgreSQL server
(``pgserver``), an S3-compatible server (moto's), a Ray head with no CPUs and two worker nodes
(``edgecompress.testing.LocalRayCluster``). The experiment is the test suite's tiny one
(``tests/tiny_experiment.py``, trials of a few seconds) with ``--strategy tpe`` (no profile):
the run measures the machinery, not the search. Per seed it reports trials asked for and
completed, plans completed twice, trials left RUNNING, Ray processes and driver folders left
after the run, lost artifacts (every completed trial's file downloaded from the bucket and
opened in ONNX Runtime), and trials per hour against one driver alone on the same cluster.
Results go to ``bench/soak.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from edgecompress.testing.ray_cluster import LocalRayCluster, ray_pids

ROOT = Path(__file__).resolve().parents[1]
TINY = f"{ROOT / 'tests' / 'tiny_experiment.py'}:experiment"
BUCKET = "edge-soak"
NODE_CPUS = 3  # two nodes: 6 trials at a time, the 3 drivers x 2 workers


def driver(storage: str, study: str, trials: int, workers: int, address: str, log: Path) -> Any:
    command = [sys.executable, "-m", "edgecompress.cli", "search", TINY, "--speedup", "0.5"]
    command += ["--trials", str(trials), "--strategy", "tpe", "--storage", storage]
    command += ["--study", study, "--no-progress", "--workers", str(workers)]
    command += ["--ray-address", address, "--artifacts", f"s3://{BUCKET}/soak"]
    with open(log, "a") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def trials_of(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []


def complete(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials if t.state == TrialState.COMPLETE]


def lost_artifacts(storage: str, study: str, done: list[optuna.trial.FrozenTrial]) -> int:
    """Completed trials whose ONNX file cannot be downloaded and opened."""
    import onnxruntime as ort

    from edgecompress.search.front import download, open_result

    result = open_result(study, storage)
    lost = 0
    with tempfile.TemporaryDirectory() as tmp:
        for trial in done:
            try:
                path = download(result, trial.number, Path(tmp) / f"{trial.number}.onnx")
                ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            except Exception:  # noqa: BLE001 - counted
                lost += 1
    return lost


def reason(trial: optuna.trial.FrozenTrial) -> str:
    error = str(trial.user_attrs.get("error", ""))
    if error.startswith("interrupted"):
        return "its driver was killed"
    if "node has died" in error or "node was terminated" in error:
        return "its Ray node was killed"
    return error.splitlines()[0][:80] if error else "no error recorded"


def orphans() -> dict[str, int]:
    """Processes that outlived the drivers: edgecompress drivers and watchdogs, and Ray workers
    still busy (not idle in the nodes' pools, not the nodes' own agents)."""
    out = subprocess.run(["ps", "-ww", "-eo", "stat=,args="], capture_output=True, text=True)
    edge = busy = 0
    for line in out.stdout.splitlines():
        stat, _, args = line.strip().partition(" ")
        args = args.strip()
        if stat.startswith("Z"):
            continue
        if "edgecompress.cli" in args or "edgecompress.search.watchdog" in args:
            edge += 1
        idle = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")
        if args.startswith("ray::") and not args.startswith(idle):
            busy += 1
    return {"edgecompress_processes": edge, "busy_ray_workers": busy}


def soak(args: argparse.Namespace, seed: int, storage: str, cluster: LocalRayCluster) -> dict:
    rng = random.Random(seed)
    study = f"soak-{seed}"
    logs = Path(tempfile.mkdtemp(prefix="ec-soak-logs-"))
    n = args.trials
    kill_driver_at, kill_node_at = rng.randint(n // 6, n // 2), rng.randint(n // 3, 2 * n // 3)
    victim = rng.randrange(args.drivers)
    nodes = [cluster.add_node(NODE_CPUS) for _ in range(2)]
    folders = set(Path(tempfile.gettempdir()).glob("edgecompress-ray-*"))
    start = time.monotonic()
    drivers = []
    for i in range(args.drivers):
        drivers.append(driver(storage, study, n, args.workers, cluster.address, logs / f"{i}.log"))
        time.sleep(rng.uniform(0, 2))
    events: list[str] = []
    driver_killed = node_killed = False
    while any(d.poll() is None for d in drivers):
        done = len(complete(trials_of(storage, study)))
        if not driver_killed and done >= kill_driver_at:
            drivers[victim].send_signal(signal.SIGKILL)
            drivers[victim].wait()
            events.append(f"driver {victim} killed at {done} complete")
            time.sleep(rng.uniform(1, 5))
            restarted = driver(storage, study, n, args.workers, cluster.address, logs / "r.log")
            drivers.append(restarted)
            driver_killed = True
        if not node_killed and done >= kill_node_at:
            gone = nodes.pop(rng.randrange(len(nodes)))
            cluster.kill_node(gone)
            nodes.append(cluster.add_node(NODE_CPUS))
            events.append(f"a worker node killed at {done} complete, another started")
            node_killed = True
        if time.monotonic() - start > args.timeout_s:
            events.append("timed out: drivers killed")
            for d in drivers:
                d.kill()
        time.sleep(1)
    elapsed = time.monotonic() - start
    time.sleep(10)  # what outlives the drivers by 10 s is left behind
    left = orphans()
    trials = trials_of(storage, study)
    done_trials = complete(trials)
    keys = [t.user_attrs["plan_key"] for t in done_trials]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    for node in nodes:
        cluster.kill_node(node)
    row = {
        "seed": seed,
        "asked": n,
        "completed": len(done_trials),
        "plans_completed_twice": len(keys) - len(set(keys)),
        "left_running": sum(t.state == TrialState.RUNNING for t in trials),
        "failed": len(failed),
        "failed_because": dict(Counter(reason(t) for t in failed)),
        "failed_retried": sum(
            any(r.user_attrs.get("retry_of") == t.number for r in done_trials) for t in failed
        ),
        "lost_artifacts": lost_artifacts(storage, study, done_trials),
        "driver_exit_codes": [d.returncode for d in drivers],
        **left,
        "driver_folders_left": len(
            set(Path(tempfile.gettempdir()).glob("edgecompress-ray-*")) - folders
        ),
        "events": events,
        "wall_s": round(elapsed, 1),
        "trials_per_hour": round(len(done_trials) / elapsed * 3600, 1),
    }
    shutil.rmtree(logs, ignore_errors=True)
    return row


def alone(args: argparse.Namespace, storage: str, cluster: LocalRayCluster) -> dict:
    """One driver with the same workers on the same cluster, nothing killed."""
    nodes = [cluster.add_node(NODE_CPUS) for _ in range(2)]
    logs = Path(tempfile.mkdtemp(prefix="ec-soak-logs-"))
    start = time.monotonic()
    one = driver(storage, "alone", args.alone_trials, args.workers, cluster.address, logs / "a")
    one.wait(timeout=args.timeout_s)
    elapsed = time.monotonic() - start
    done = len(complete(trials_of(storage, "alone")))
    for node in nodes:
        cluster.kill_node(node)
    shutil.rmtree(logs, ignore_errors=True)
    return {
        "completed": done,
        "wall_s": round(elapsed, 1),
        "exit_code": one.returncode,
        "trials_per_hour": round(done / elapsed * 3600, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--drivers", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--alone-trials", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--timeout-s", type=float, default=2400)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "soak.json")
    args = parser.parse_args()

    import pgserver
    from moto.server import ThreadedMotoServer

    os.environ.update(
        AWS_ACCESS_KEY_ID="soak", AWS_SECRET_ACCESS_KEY="soak", AWS_DEFAULT_REGION="us-east-1"
    )
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    base = Path(tempfile.mkdtemp(prefix="ec-soak-"))  # short: Ray's socket paths are limited
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    s3 = ThreadedMotoServer(port=0, verbose=False)
    s3.start()
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{s3.get_host_and_port()[1]}"
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    server = pgserver.get_server(base / "pg", cleanup_mode="stop")
    before = ray_pids()
    rows, baseline = [], {}
    try:
        storage = server.get_uri()
        cluster = LocalRayCluster(base / "ray", env=dict(os.environ))
        try:
            for seed in args.seeds:
                rows.append(soak(args, seed, storage, cluster))
                print(json.dumps(rows[-1]), flush=True)
            baseline = alone(args, storage, cluster)
            print(json.dumps({"alone": baseline}), flush=True)
        finally:
            cluster.stop()
    finally:
        server.cleanup()
        s3.stop()
        shutil.rmtree(base, ignore_errors=True)
    time.sleep(5)
    left = sorted(ray_pids() - before)
    report = {
        "command": "bench/soak.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "runs": rows,
        "one_driver_alone": baseline,
        "ray_processes_left_after_the_run": len(left),
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}))


if __name__ == "__main__":
    main()
