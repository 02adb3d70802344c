"""Latency measured in ONNX Runtime, as a ratio to a reference model timed in the same rounds.

This machine's speed drifts by up to 70% within minutes, so an absolute time taken now is not
comparable with one taken later. A measurement is: warm-up, then rounds that time a block of
calls of the candidate and a block of the fixed reference (alternating which goes first); the
median of the per-round ratios is the result; drift common to both cancels. The latency in ms is
that ratio times the reference latency taken once at the study's start. Thread count is fixed.

``$EDGECOMPRESS_MEASURE_EFFORT`` (in (0, 1], default 1) scales the rounds and the warm-up of
every measurement here: fewer rounds, a noisier median, a faster search. The test suite runs
at 0.34 (its assertions are on behaviour, never on a time); a study to trust runs at 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.compress import Candidate
from edgecompress.errors import EdgeCompressError
from edgecompress.inputs import repeat_first
from edgecompress.targets import Target
from edgecompress.targets.runner import Timed, interleaved, stats

if TYPE_CHECKING:
    from edgecompress.experiment import Experiment


@dataclass(frozen=True)
class Measurement:
    ratio: float  # candidate time / reference time, median of the rounds
    spread_pct: float  # inter-quartile range of the per-round ratios, % of the median
    rounds: int


def input_for(experiment: Experiment) -> dict[str, np.ndarray]:
    """The latency feed: the example input's first row repeated to the target's batch size, as
    ``{ONNX input name: array}`` in each input's own dtype (token ids stay integers; floating
    point is fed as float32, what the export takes)."""
    example = repeat_first(experiment.example_input, experiment.target.batch_size)
    return experiment.inputs.named(example)


Feed = np.ndarray | dict[str, np.ndarray]  # one array: the model's one input


def feed_of(sess: Any, feed: Feed) -> dict[str, np.ndarray]:
    """The part of ``feed`` a session reads (an input the model ignores is not in its graph);
    an input it reads that the feed lacks is an error naming both. One array is the feed of
    a model with one input."""
    wanted = [arg.name for arg in sess.get_inputs()]
    if not isinstance(feed, dict):
        if len(wanted) != 1:
            raise ValueError(f"the ONNX model takes inputs {wanted}: feed {{name: array}}")
        return {wanted[0]: feed}
    missing = [name for name in wanted if name not in feed]
    if missing:
        raise ValueError(
            f"the ONNX model takes inputs {wanted}; the feed has {sorted(feed)} (missing "
            f"{missing}). Export it with the experiment's input names."
        )
    return {name: feed[name] for name in wanted}


EFFORT_ENV = "EDGECOMPRESS_MEASURE_EFFORT"
LEAST_ROUNDS = 7  # whatever the effort: a median of fewer is one unlucky round away from wrong


def effort() -> float:
    """The share of their rounds and warm-up the measurements take (``EFFORT_ENV``)."""
    raw = os.environ.get(EFFORT_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 < value <= 1.0:  # nan fails too
        raise EdgeCompressError(
            f"{EFFORT_ENV}={raw!r}: the share of the rounds a latency measurement takes must "
            "be a number in (0, 1]; unset it (or 1) for the full measurement"
        )
    return value


def scaled(rounds: int, warmup_s: float) -> tuple[int, float]:
    """``rounds`` and ``warmup_s`` at the measurement effort asked (``effort``)."""
    share = effort()
    if share == 1.0:
        return rounds, warmup_s
    return max(LEAST_ROUNDS, round(rounds * share)), warmup_s * share


def measure_ratio(
    candidate: Path | bytes,
    reference: Path | bytes,
    feed: Feed,
    *,
    threads: int,
    rounds: int = 30,
    warmup_s: float = 0.3,
    block_ms: float = 25.0,
    runtime: str = "onnxruntime",
) -> Measurement:
    """The rounds of ``targets.runner`` (the code every latency table is measured with), on
    two whole models as the target runs them (all graph optimizations) in ``runtime``
    (``Target.runtime``)."""
    rounds, warmup_s = scaled(rounds, warmup_s)
    cand = _timed(candidate, feed, threads, runtime)
    ref = _timed(reference, feed, threads, runtime)
    ratios = interleaved(
        [cand], ref, rounds=rounds, warmup_s=warmup_s, block_ms=block_ms, min_runs=10
    )[0]
    median, _, spread = stats(ratios)
    return Measurement(median, spread, rounds)


def measure_absolute_ms(
    model: Path | bytes,
    feed: Feed,
    *,
    threads: int,
    rounds: int = 40,
    warmup_s: float = 0.5,
    runtime: str = "onnxruntime",
) -> float:
    """Median per-call time over ``rounds`` blocks (only for the study's reference latency)."""
    rounds, warmup_s = scaled(rounds, warmup_s)
    timed = _timed(model, feed, threads, runtime)
    timed.warm_up(warmup_s, 25.0, min_runs=10)
    return float(np.median([timed.block_ms() for _ in range(rounds)]))


def _timed(model: Path | bytes, feed: Feed, threads: int, runtime: str) -> Timed:
    source = model if isinstance(model, bytes) else str(model)
    if runtime == "openvino":
        from edgecompress.targets.openvino import OpenVinoTimed  # an optional dependency

        return OpenVinoTimed(source, threads, feed)
    timed = Timed(source, threads, optimize=True)
    timed.feed = feed_of(timed.sess, feed)
    return timed


class MeasuredLatency:
    """``latency_ms`` = median ratio to the reference x the study's reference latency."""

    def __init__(
        self,
        *,
        reference: Path | bytes,
        reference_ms: float,
        feed: dict[str, np.ndarray],
        target: Target,
        gate: Callable[[], AbstractContextManager[Any]] = nullcontext,
    ) -> None:
        self.reference, self.reference_ms, self.feed = reference, reference_ms, feed
        self.target, self.gate = target, gate

    def __call__(self, candidate: Candidate) -> dict[str, float]:
        with self.gate():
            m = measure_ratio(
                candidate.onnx_path,
                self.reference,
                self.feed,
                threads=self.target.threads,
                runtime=self.target.runtime,
            )
        return {
            "latency_ms": m.ratio * self.reference_ms,
            "latency_ratio": m.ratio,
            "latency_spread_pct": m.spread_pct,
        }
