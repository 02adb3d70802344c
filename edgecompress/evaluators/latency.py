"""Latency measured in ONNX Runtime, as a ratio to a reference model timed in the same rounds.

This machine's speed drifts by up to 70% within minutes, so an absolute time taken now is not
comparable with one taken later. A measurement is: warm-up, then rounds that time a block of
calls of the candidate and a block of the fixed reference (alternating which goes first); the
median of the per-round ratios is the result; drift common to both cancels. The latency in ms is
that ratio times the reference latency taken once at the study's start. Thread count is fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.compress import Candidate
from edgecompress.targets import Target
from edgecompress.targets.runner import Timed, interleaved, stats


@dataclass(frozen=True)
class Measurement:
    ratio: float  # candidate time / reference time, median of the rounds
    spread_pct: float  # inter-quartile range of the per-round ratios, % of the median
    rounds: int


def input_for(example_input: Any, target: Target) -> np.ndarray:
    """The example input with its batch dimension set to the target's batch size, in its own
    dtype (token ids stay integers; floating point is fed as float32, what the export takes)."""
    x = np.asarray(example_input)[:1]
    if not np.issubdtype(x.dtype, np.integer) and x.dtype != np.bool_:
        x = x.astype(np.float32)
    return np.ascontiguousarray(np.repeat(x, target.batch_size, axis=0))


def measure_ratio(
    candidate: Path | bytes,
    reference: Path | bytes,
    feed: np.ndarray,
    *,
    threads: int,
    rounds: int = 30,
    warmup_s: float = 0.3,
    block_ms: float = 25.0,
) -> Measurement:
    """The rounds of ``targets.runner`` (the code every latency table is measured with), on
    two whole models as the target runs them (all graph optimizations)."""
    cand, ref = _timed(candidate, feed, threads), _timed(reference, feed, threads)
    ratios = interleaved(
        [cand], ref, rounds=rounds, warmup_s=warmup_s, block_ms=block_ms, min_runs=10
    )[0]
    median, _, spread = stats(ratios)
    return Measurement(median, spread, rounds)


def measure_absolute_ms(
    model: Path | bytes, feed: np.ndarray, *, threads: int, rounds: int = 40, warmup_s: float = 0.5
) -> float:
    """Median per-call time over ``rounds`` blocks (only for the study's reference latency)."""
    timed = _timed(model, feed, threads)
    timed.warm_up(warmup_s, 25.0, min_runs=10)
    return float(np.median([timed.block_ms() for _ in range(rounds)]))


def _timed(model: Path | bytes, feed: np.ndarray, threads: int) -> Timed:
    source = model if isinstance(model, bytes) else str(model)
    timed = Timed(source, threads, optimize=True)
    timed.feed = {timed.sess.get_inputs()[0].name: feed}
    return timed


class MeasuredLatency:
    """``latency_ms`` = median ratio to the reference x the study's reference latency."""

    def __init__(
        self,
        *,
        reference: Path | bytes,
        reference_ms: float,
        feed: np.ndarray,
        target: Target,
        gate: Callable[[], AbstractContextManager[Any]] = nullcontext,
    ) -> None:
        self.reference, self.reference_ms, self.feed = reference, reference_ms, feed
        self.target, self.gate = target, gate

    def __call__(self, candidate: Candidate) -> dict[str, float]:
        with self.gate():
            m = measure_ratio(
                candidate.onnx_path, self.reference, self.feed, threads=self.target.threads
            )
        return {
            "latency_ms": m.ratio * self.reference_ms,
            "latency_ratio": m.ratio,
            "latency_spread_pct": m.spread_pct,
        }
