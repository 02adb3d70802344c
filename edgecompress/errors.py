"""User-facing errors: each names what was wrong, the values, and what to do."""


class EdgeCompressError(Exception):
    """Bad input refused before any work; the CLI prints it and exits with code 2."""


class NoFeasibleTrial(EdgeCompressError):
    """No trial meets the constraints; carries the least-violating trials."""


class TrialsKeepFailing(Exception):
    """Trials fail one after another; the search stopped (CLI exit code 4)."""
