"""The study, its executors (in-process, Ray Tune), resume, and the front."""

from edgecompress.search.engine import (
    profile_report,
    search,
    space_and_dominated,
    space_of,
    space_report,
)
from edgecompress.search.front import Result, open_result, pareto_mask
from edgecompress.search.meta import StudyMeta
from edgecompress.search.storage import DEFAULT_STORAGE
from edgecompress.search.strategies import STRATEGIES, Proposal, Strategy

__all__ = [
    "DEFAULT_STORAGE",
    "STRATEGIES",
    "Proposal",
    "Result",
    "Strategy",
    "StudyMeta",
    "open_result",
    "pareto_mask",
    "profile_report",
    "search",
    "space_and_dominated",
    "space_of",
    "space_report",
]
