"""Driver heartbeats: how one driver of a study knows another, on another machine, is alive.

Every trial records the driver that runs it (``host:pid:start``). On the driver's own machine,
whether it still runs is a question for the operating system. A driver on another machine
(several drivers on one PostgreSQL study) cannot be seen from here: each driver writes the time
to the study every ``INTERVAL_S`` while it runs (``heartbeat:<driver>`` among the study's user
attributes), and one whose last beat is older than ``GRACE_S`` is gone. Its RUNNING trials are
then failed and retried once, by whichever driver notices first (``recover_interrupted``), and
no driver counts them toward the study's total any more.

The clocks of the machines are compared, so they must agree to well within ``GRACE_S`` (NTP
does); a driver that stops cleanly marks itself gone at once.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType

import optuna

INTERVAL_S = 10.0
GRACE_S = 60.0  # six missed beats: a driver busy in a long step still beats from its thread
KEY = "heartbeat:"


def host_of(owner: str) -> str:
    return owner.partition(":")[0]


def last_beat(study: optuna.Study, owner: str) -> float | None:
    """When ``owner`` last beat (seconds since the epoch), None if it never did."""
    value = study.user_attrs.get(KEY + owner)
    return float(value) if isinstance(value, (int, float)) else None


def beating(study: optuna.Study, owner: str, *, now: float | None = None) -> bool:
    """Whether ``owner``'s last beat is within ``GRACE_S`` (a driver that stopped cleanly
    wrote 0)."""
    last = last_beat(study, owner)
    return last is not None and (now or time.time()) - last < GRACE_S


def on_this_host(owner: str) -> bool:
    return host_of(owner) == socket.gethostname()


class Heartbeat:
    """While entered, beats for ``driver`` every ``interval_s`` from a daemon thread (the first
    beat before entering returns); on exit, writes 0: gone. A beat the storage refuses (a
    database busy for a moment) is retried at the next one."""

    def __init__(self, study: optuna.Study, driver: str, interval_s: float = INTERVAL_S) -> None:
        self.study, self.driver, self.interval_s = study, driver, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="edgecompress-heartbeat", daemon=True
        )

    def beat(self, value: float | None = None) -> None:
        with contextlib.suppress(Exception):
            self.study.set_user_attr(KEY + self.driver, time.time() if value is None else value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s)
        self.beat(0.0)
