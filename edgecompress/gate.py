"""CpuGate: keeps latency measurements apart from CPU-heavy work on the same machine.

Two trials on two cores disturb each other: a latency measured while another trial trains is not
a measurement. Work (fine-tuning epochs, calibration, accuracy evaluation) holds the gate
*shared*; a measurement holds it *exclusive*, so it runs only while no work runs on this machine.
A waiting measurement first takes a turnstile, which new work must pass, so measurements are
never starved by a stream of epochs. The locks are files (``flock``), so they hold across the
processes of Ray workers on one machine; different machines do not share them, which is right.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class CpuGate:
    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        base = Path(directory or os.environ.get("EDGECOMPRESS_GATE_DIR") or tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        self._turnstile = base / f"edgecompress-{os.getuid()}.turnstile.lock"
        self._main = base / f"edgecompress-{os.getuid()}.cpu.lock"
        self.waited_s = 0.0

    @contextmanager
    def _locked(self, path: Path, mode: int) -> Iterator[None]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            start = time.perf_counter()
            fcntl.flock(fd, mode)
            self.waited_s += time.perf_counter() - start
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @contextmanager
    def work(self) -> Iterator[None]:
        """Hold around a bounded piece of CPU-heavy work (an epoch, a calibration)."""
        with self._locked(self._turnstile, fcntl.LOCK_EX):
            pass
        with self._locked(self._main, fcntl.LOCK_SH):
            yield

    @contextmanager
    def measure(self) -> Iterator[None]:
        """Hold around a latency measurement: waits until no work runs on this machine."""
        with self._locked(self._turnstile, fcntl.LOCK_EX), self._locked(self._main, fcntl.LOCK_EX):
            yield
