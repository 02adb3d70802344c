"""Latency measured in ONNX Runtime, as a ratio to a reference model timed in the same rounds.

This machine's speed drifts by up to 70% within minutes, so an absolute time taken now is not
comparable with one taken later. A measurement is: warm-up, then rounds that time a block of
calls of the candidate and a block of the fixed reference (alternating which goes first); the
median of the per-round ratios is the result; drift common to both cancels. The latency in ms is
that ratio times the reference latency taken once at the study's start. Thread count is fixed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.compress import Candidate
from edgecompress.evaluators.runtime import session
from edgecompress.targets import Target


@dataclass(frozen=True)
class Measurement:
    ratio: float  # candidate time / reference time, median of the rounds
    spread_pct: float  # inter-quartile range of the per-round ratios, % of the median
    rounds: int


class _Timed:
    def __init__(self, path: Path | bytes, feed: np.ndarray, threads: int) -> None:
        self.sess = session(path, threads=threads)
        self.feed = {self.sess.get_inputs()[0].name: feed}
        self.calls = 1

    def block_ms(self) -> float:
        """Mean time of one call over a block of ``self.calls`` calls."""
        run, feed = self.sess.run, self.feed
        start = time.perf_counter_ns()
        for _ in range(self.calls):
            run(None, feed)
        return (time.perf_counter_ns() - start) / self.calls / 1e6

    def warm_up(self, seconds: float, block_ms: float) -> None:
        """Runs for ``seconds``, then sizes a block to last about ``block_ms``."""
        deadline = time.perf_counter() + seconds
        runs, one = 0, self.block_ms()
        while time.perf_counter() < deadline or runs < 10:
            one = min(one, self.block_ms())
            runs += 1
        self.calls = max(1, int(block_ms / max(one, 1e-4)))


def input_for(example_input: Any, target: Target) -> np.ndarray:
    """The example input with its batch dimension set to the target's batch size."""
    x = np.asarray(example_input, dtype=np.float32)[:1]
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
    cand, ref = _Timed(candidate, feed, threads), _Timed(reference, feed, threads)
    cand.warm_up(warmup_s, block_ms)
    ref.warm_up(warmup_s, block_ms)
    ratios = []
    for r in range(rounds):
        if r % 2:
            c = cand.block_ms()
            f = ref.block_ms()
        else:
            f = ref.block_ms()
            c = cand.block_ms()
        ratios.append(c / f)
    q25, q50, q75 = np.percentile(ratios, [25, 50, 75])
    return Measurement(float(q50), float(100 * (q75 - q25) / q50), rounds)


def measure_absolute_ms(
    model: Path | bytes, feed: np.ndarray, *, threads: int, rounds: int = 40, warmup_s: float = 0.5
) -> float:
    """Median per-call time over ``rounds`` blocks (only for the study's reference latency)."""
    timed = _Timed(model, feed, threads)
    timed.warm_up(warmup_s, 25.0)
    return float(np.median([timed.block_ms() for _ in range(rounds)]))


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
