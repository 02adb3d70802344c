"""The CPU gate: a measurement never overlaps work, and waiting measurements are not starved."""

import fcntl
import os
import threading
import time
from pathlib import Path

from edgecompress.gate import CpuGate


def test_measurement_waits_for_work_and_blocks_new_work(tmp_path: Path) -> None:
    events: list[str] = []
    work_started = threading.Event()
    release_work = threading.Event()
    measuring = threading.Event()

    def worker(name: str, hold: threading.Event | None) -> None:
        with CpuGate(tmp_path).work():
            events.append(f"{name} start")
            work_started.set()
            if hold is not None:
                hold.wait(10)
            events.append(f"{name} end")

    def measurer() -> None:
        with CpuGate(tmp_path).measure():
            measuring.set()
            events.append("measure start")
            time.sleep(0.2)
            events.append("measure end")

    first = threading.Thread(target=worker, args=("w1", release_work))
    first.start()
    work_started.wait(5)
    m = threading.Thread(target=measurer)
    m.start()
    assert _held(CpuGate(tmp_path)._turnstile), "the measurement never reached the turnstile"
    time.sleep(0.3)
    assert not measuring.is_set()  # w1 still works: no measurement yet
    late = threading.Thread(target=worker, args=("w2", None))
    late.start()
    time.sleep(0.3)
    assert "w2 start" not in events  # new work queues behind the waiting measurement
    release_work.set()
    for t in (first, m, late):
        t.join(10)
    assert events == ["w1 start", "w1 end", "measure start", "measure end", "w2 start", "w2 end"]


def _held(lock: Path, timeout_s: float = 10.0) -> bool:
    """Whether another holder takes ``lock`` within the timeout (polled, so a starved thread
    on a loaded machine is waited for instead of raced)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        time.sleep(0.01)
    return False


def test_work_runs_concurrently_with_work(tmp_path: Path) -> None:
    inside = threading.Barrier(2, timeout=5)

    def worker() -> None:
        with CpuGate(tmp_path).work():
            inside.wait()  # both must be inside at once, or this times out

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not inside.broken
