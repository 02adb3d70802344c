"""User-facing errors: each names what was wrong, the values, and what to do."""

from __future__ import annotations

from typing import Any


class EdgeCompressError(Exception):
    """Bad input refused before any work; the CLI prints it and exits with code 2."""


class NoFeasibleTrial(EdgeCompressError):
    """No trial meets the constraints; carries the least-violating trials."""


class TrialsKeepFailing(Exception):
    """Trials fail one after another; the search stopped (CLI exit code 4)."""


def mismatch(differ: dict[str, tuple[Any, Any]]) -> tuple[str, str]:
    """``("threads 1, batch_size 4", "threads 2, batch_size 1")`` for ``{key: (was, now)}``:
    the two sides of a "this was made with ...; asked now: ..." message."""
    was = ", ".join(f"{k} {old}" for k, (old, _) in differ.items())
    now = ", ".join(f"{k} {new}" for k, (_, new) in differ.items())
    return was, now
