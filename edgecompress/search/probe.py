"""What a plan's latency is before it is trained, and the uncompressed reference it is measured
against.

A plan is built without fine-tuning (about a second: structure and precision decide latency,
trained weights do not) and measured here in interleaved rounds against the reference, or
predicted from the target's table when the study takes its latency from one.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecompress.compress import compress, export_onnx
from edgecompress.evaluators import input_for, measure_ratio
from edgecompress.experiment import Experiment
from edgecompress.gate import CpuGate
from edgecompress.plan import Plan
from edgecompress.search.costing import Costing
from edgecompress.tables.bundle import latency_plan


@dataclass(frozen=True)
class Reference:
    """The uncompressed model as ONNX bytes, and the input a measurement feeds."""

    onnx: bytes
    feed: dict[str, np.ndarray]  # {ONNX input name: array}


def reference_of(experiment: Experiment) -> Reference:
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(
            experiment.model(), experiment.example_input, Path(tmp) / "ref.onnx", experiment.inputs
        )
        data = path.read_bytes()
    return Reference(data, input_for(experiment))


# A plan measured untrained more than this share over the budget is not trained: the trained
# model has the same graph, and two measurements of one model agree within a few percent here.
LIVE_MARGIN = 0.05


@dataclass
class LatencyProbe:
    """A plan's latency before any training: built without fine-tuning (about a second) and
    measured here against the reference in interleaved rounds, or predicted from the target's
    table when the study takes its latency from one. Results are kept per plan."""

    experiment: Experiment
    reference: Reference
    reference_ms: float
    costing: Costing | None = None
    rounds: int = 15
    gate: CpuGate = field(default_factory=CpuGate)
    known: dict[str, float] = field(default_factory=dict)

    def __call__(self, plan: Plan) -> float:
        if plan.key not in self.known:
            self.known[plan.key] = self._latency_ms(plan)
        return self.known[plan.key]

    def built(self, plan: Plan, onnx_path: Path) -> float:
        """``plan``'s latency, measured on a file already built from it (any calibration: the
        graph, hence the latency, is the same) so that a caller that built it for another
        reason does not pay for a second build; kept like ``__call__``'s."""
        if plan.key not in self.known:
            self.known[plan.key] = self._latency_ms(plan, built=onnx_path)
        return self.known[plan.key]

    def _latency_ms(self, plan: Plan, built: Path | None = None) -> float:
        if self.costing is not None and self.costing.latency == "table":
            with self.gate.work():
                return self.costing.predict_plan(self.experiment, plan).latency_ms
        if built is not None:
            return self._measured_ms(built)
        with tempfile.TemporaryDirectory() as tmp:
            untrained = latency_plan(plan)
            candidate = compress(self.experiment, untrained, Path(tmp), gate=self.gate.work)
            return self._measured_ms(candidate.onnx_path)

    def _measured_ms(self, onnx_path: Path) -> float:
        with self.gate.measure():
            m = measure_ratio(
                onnx_path,
                self.reference.onnx,
                self.reference.feed,
                threads=self.experiment.target.threads,
                rounds=self.rounds,
                runtime=self.experiment.target.runtime,
            )
        return m.ratio * self.reference_ms

    def over_budget(self, latency_ms: float, budget_ms: float) -> bool:
        """Known to miss the budget: measured more than ``LIVE_MARGIN`` over it (a table's
        prediction is judged by its own uncertainty, in ``Costing.over_budget``)."""
        return latency_ms > budget_ms * (1 + LIVE_MARGIN)
