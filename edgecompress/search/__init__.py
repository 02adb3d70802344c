"""The study, its executors (in-process, Ray Tune), resume, and the front."""

from edgecompress.search.engine import search, space_of, space_report
from edgecompress.search.front import Result, open_result, pareto_mask
from edgecompress.search.storage import DEFAULT_STORAGE

__all__ = [
    "DEFAULT_STORAGE",
    "Result",
    "open_result",
    "pareto_mask",
    "search",
    "space_of",
    "space_report",
]
