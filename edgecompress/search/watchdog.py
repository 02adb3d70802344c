"""Cleans what a driver killed without a chance to clean (SIGKILL, the OOM killer) leaves.

A search on Ray starts this as a process of its own session (``watch``): it waits for the
driver to end; if the driver's work folder (Tune's files and, for a local Ray, Ray's own
temporary folder) is still there, the driver died without cleaning, so every process that
still has a file open in that folder or works in it (the local Ray's raylet, GCS server,
agents and workers) is killed, and the folder removed. A driver that finishes removes the
folder and stops the watchdog itself.

    python -m edgecompress.search.watchdog DRIVER_PID FOLDER

Linux only (it reads ``/proc``); elsewhere it exits at once and changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 0.5


def watch(folder: Path) -> subprocess.Popen[bytes]:
    """Starts the watchdog of this process and ``folder``; the caller stops it when done."""
    return subprocess.Popen(
        [sys.executable, "-m", "edgecompress.search.watchdog", str(os.getpid()), str(folder)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C or a kill of the driver's group does not reach it
    )


def _started(pid: int) -> str | None:
    """The process's start time (to tell it from a later process given the same pid); None
    once it has ended (a zombie waiting for its parent has ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def holders(folder: Path) -> set[int]:
    """Processes (not this one) with a file open in ``folder``, or working in it."""
    root = str(folder.resolve())
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            links = [os.readlink(entry / "cwd")]
            links += [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:  # gone, or not ours to read
            continue
        if any(link == root or link.startswith(root + os.sep) for link in links):
            found.add(int(entry.name))
    return found


def clean(folder: Path, rounds: int = 10) -> int:
    """Kills the processes holding ``folder`` (until none is left, ``rounds`` times at most:
    a dying raylet may start a worker) and removes it. Returns how many were killed."""
    killed: set[int] = set()
    for _ in range(rounds):
        left = holders(folder) - killed
        if not left:
            break
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed |= left
        time.sleep(POLL_S)
    shutil.rmtree(folder, ignore_errors=True)
    return len(killed)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not Path(f"/proc/{os.getpid()}/stat").exists():  # not Linux: no way to watch, do nothing
        return 0
    pid, folder = int(argv[0]), Path(argv[1])
    started = _started(pid)
    while started is not None and _started(pid) == started:
        time.sleep(POLL_S)
    if folder.exists():  # the driver died without cleaning
        clean(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
