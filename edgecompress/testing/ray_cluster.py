"""A Ray cluster of separate processes on this machine, as on several machines: a head that
runs no trial and worker nodes started by ``ray start --address``, each one a raylet of its own
that can be killed alone. For tests and benchmarks of what a search does when a node dies.

    with LocalRayCluster(base) as cluster:          # base: a short folder (socket paths)
        node = cluster.add_node(cpus=2)
        ... edgecompress search ... --ray-address cluster.address
        cluster.kill_node(node)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

RAY = str(Path(sys.executable).with_name("ray"))
# the head notices a dead node within about a second (Ray's default waits about 30 s)
FAST_HEALTH_CHECK = {
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "300",
    "RAY_health_check_timeout_ms": "300",
    "RAY_health_check_failure_threshold": "3",
}


def ray_pids() -> set[int]:
    """Live Ray processes of this machine: raylets, GCS servers, Ray workers and agents."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,stat=,args="], capture_output=True, text=True)
    found = set()
    for line in out.stdout.splitlines():
        pid, stat, args = (line.split(None, 2) + ["", ""])[:3]
        if stat.startswith("Z"):
            continue
        if args.startswith("ray::") or any(k in args for k in ("raylet", "gcs_server", "/ray/")):
            found.add(int(pid))
    return found


def _raylets() -> set[int]:
    out = subprocess.run(["pgrep", "-x", "raylet"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRayCluster:
    """A head with no CPUs in ``base`` (Ray's temporary folder); ``add_node`` starts worker
    nodes. ``env``: the environment every node runs in (the caller's, with a fast health
    check); a node's trials see it, so it carries what they need (an S3 server's settings)."""

    def __init__(self, base: Path, env: dict[str, str] | None = None) -> None:
        self.address = f"127.0.0.1:{_free_port()}"
        self.env = {**(env if env is not None else os.environ), **FAST_HEALTH_CHECK}
        self.before = ray_pids()
        port = self.address.split(":")[1]
        self._ray("start", "--head", "--num-cpus", "0", "--port", port, "--temp-dir", str(base))

    def _ray(self, *args: str) -> None:
        extra = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
        if "--head" in args:
            extra.append("--include-dashboard=false")
        subprocess.run(
            [RAY, *args, *extra], env=self.env, check=True, capture_output=True, timeout=120
        )

    def add_node(self, cpus: int = 2) -> int:
        """Starts a worker node offering ``cpus`` trials at a time; returns its raylet's pid."""
        raylets = _raylets()
        self._ray("start", "--address", self.address, "--num-cpus", str(cpus))
        new = _raylets() - raylets
        if len(new) != 1:
            raise RuntimeError(f"ray start --address: expected one new raylet, found {new}")
        return new.pop()

    @staticmethod
    def kill_node(raylet: int) -> None:
        """Kills a worker node's raylet with SIGKILL, as a machine lost from the cluster."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(raylet, signal.SIGKILL)

    def stop(self, timeout_s: float = 30.0) -> set[int]:
        """Kills every Ray process started since the cluster was; returns those still alive
        after ``timeout_s`` (none, unless something resists SIGKILL)."""
        for pid in ray_pids() - self.before:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        while (left := ray_pids() - self.before) and time.monotonic() < deadline:
            time.sleep(0.5)
        return left

    def __enter__(self) -> LocalRayCluster:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
