"""One trial, run where a worker runs: compress the plan, evaluate it, hand back metrics and ONNX.

The worker imports the experiment itself (from its ``FILE.py:NAME`` reference); only the
reference, the plan and numbers cross processes; the ONNX file goes to the study's artifact
store from here.
"""

from __future__ import annotations

import socket
import tempfile
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgecompress.compress import compress
from edgecompress.evaluators import MeasuredLatency, OnnxMetrics, file_size
from edgecompress.experiment import Experiment, load_experiment
from edgecompress.gate import CpuGate
from edgecompress.plan import Plan
from edgecompress.search.artifacts import put
from edgecompress.search.costing import Costing
from edgecompress.search.probe import LatencyProbe, Reference, reference_of
from edgecompress.targets import Target
from edgecompress.targets.table import Prediction, TableError


@dataclass(frozen=True)
class Outcome:
    """What a finished trial hands back to the driver."""

    metrics: dict[str, float]
    artifact: str  # the id the deployable file is stored under in the study's artifacts ("": none)
    notes: dict[str, Any] = field(default_factory=dict)
    screened: bool = False  # predicted over the budget: never fine-tuned, no file


@lru_cache(maxsize=4)
def _worker_context(ref: str) -> tuple[Experiment, Reference]:
    """Per worker process: the experiment imported once, its reference exported once."""
    experiment = load_experiment(ref)
    return experiment, reference_of(experiment)


def run_trial(
    experiment: Experiment,
    plan: Plan,
    *,
    reference: Reference,
    reference_ms: float,
    artifacts: str,
    artifact_id: str,
    costing: Costing | None = None,
    budget_ms: float | None = None,
    seed: int | None = None,
) -> Outcome:
    """Compress, then evaluate the ONNX artifact: its metrics in the target's runtime (ONNX
    Runtime or OpenVINO), latency (measured there, or from the target's table), size. Given
    ``budget_ms``, the plan's latency is known before anything is trained (``_screen``) and a
    plan known to miss the budget is handed back ``screened``.
    ``seed`` (default: the experiment's) seeds the fine-tune and every random step.

    The ONNX file is stored here, in the study's artifact location ``artifacts`` (a folder or a
    bucket every machine of the study reaches) under ``artifact_id``, which the driver chose;
    the driver links it to the trial when it is told the outcome.
    """
    gate = CpuGate()
    start = time.perf_counter()
    if seed is not None:  # each trial fine-tunes from its own seed
        experiment = replace(experiment, seed=seed)
    notes: dict[str, Any] = {}
    before: dict[str, float] = {}
    if budget_ms is not None:
        screened = _screen(experiment, plan, reference, reference_ms, costing, budget_ms, gate)
        if isinstance(screened, Outcome):
            return screened
        before = screened
    with tempfile.TemporaryDirectory() as tmp:
        candidate = compress(experiment, plan, Path(tmp), gate=gate.work)
        with gate.work():
            metrics = OnnxMetrics(experiment.task, experiment.inputs, experiment.target.runtime)(
                candidate
            )
        if costing is not None:
            with gate.work():
                model = Path(candidate.onnx_path).read_bytes()
                predicted = _table_estimate(costing, experiment, model, notes)
            if predicted is not None:
                metrics["predicted_latency_ms"] = predicted.latency_ms
                metrics["predicted_uncertainty_ms"] = predicted.uncertainty_ms
                metrics["table_latency_ms"] = predicted.latency_ms / costing.correction
        if costing is not None and costing.latency == "table":
            metrics["latency_ms"] = metrics["predicted_latency_ms"]
        else:
            latency = MeasuredLatency(
                reference=reference.onnx,
                reference_ms=reference_ms,
                feed=reference.feed,
                target=experiment.target,
                gate=gate.measure,
            )
            metrics.update(latency(candidate))
        metrics.update(file_size(candidate))
        put(artifacts, artifact_id, candidate.onnx_path)
    for name, value in before.items():  # what was known before training, where not re-derived
        metrics.setdefault(name, value)
    metrics["trial_s"] = time.perf_counter() - start
    metrics["gate_wait_s"] = gate.waited_s
    notes["host"] = socket.gethostname()  # where it ran (a Ray node, or the driver's machine)
    return Outcome(metrics=metrics, artifact=artifact_id, notes={**candidate.notes, **notes})


def _screen(
    experiment: Experiment,
    plan: Plan,
    reference: Reference,
    reference_ms: float,
    costing: Costing | None,
    budget_ms: float,
    gate: CpuGate,
) -> Outcome | dict[str, float]:
    """The plan's latency before training: predicted from the target's table where the study
    screens with one, else built untrained and measured here. A ``screened`` Outcome when it is
    known to miss ``budget_ms``; otherwise the metrics to keep with the trained trial. A study
    with a table created with ``--no-screen`` trains every plan; without a table, every plan is
    measured untrained."""
    start = time.perf_counter()
    notes: dict[str, Any] = {}
    if costing is not None:
        if not costing.screen:
            return {}
        with gate.work():
            estimate = _table_estimate(costing, experiment, plan, notes)
        if estimate is None:
            return {}
        latency_ms, how = estimate.latency_ms, "predicted"
        over = costing.over_budget(estimate, budget_ms)
        metrics = {
            "predicted_latency_ms": estimate.latency_ms,
            "predicted_uncertainty_ms": estimate.uncertainty_ms,
        }
    else:
        probe = LatencyProbe(experiment, reference, reference_ms, gate=gate)
        latency_ms, how = probe(plan), "measured untrained"
        over = probe.over_budget(latency_ms, budget_ms)
        metrics = {"untrained_latency_ms": latency_ms}
    if not over:
        return metrics
    return Outcome(
        metrics={
            **metrics,
            "screened_latency_ms": latency_ms,
            "screen_s": time.perf_counter() - start,
        },
        artifact="",
        notes={
            "screened": f"{how} {latency_ms:.4f} ms, budget {budget_ms:.4f} ms: not fine-tuned",
            **notes,
        },
        screened=True,
    )


def _table_estimate(
    costing: Costing, experiment: Experiment, what: Plan | bytes, notes: dict[str, Any]
) -> Prediction | None:
    """The table's prediction for a plan or a built file. In a live search a table that
    cannot predict it (a kind it never measured) only costs the estimate, noted; when the
    latency comes from the table, that is an error of the trial."""
    try:
        if isinstance(what, bytes):
            return costing.predict_model(experiment, what)
        return costing.predict_plan(experiment, what)
    except TableError as exc:
        if costing.latency == "table":
            raise
        notes["table"] = f"no estimate: {exc}"
        return None


def run_trial_by_ref(
    ref: str,
    plan: dict[str, Any],
    *,
    reference_ms: float,
    artifacts: str,
    artifact_id: str,
    costing: dict[str, Any] | None = None,
    budget_ms: float | None = None,
    seed: int | None = None,
    target: dict[str, Any] | None = None,
) -> Outcome:
    """The entry point of a worker in another process: imports the experiment itself; its
    target is the driver's (``target``: ``Target.to_dict``, a ``--runtime`` the driver was
    given included)."""
    experiment, reference = _worker_context(ref)
    if target is not None:
        experiment = replace(experiment, target=Target.from_dict(target))
    return run_trial(
        experiment,
        Plan.from_dict(plan),
        reference=reference,
        reference_ms=reference_ms,
        artifacts=artifacts,
        artifact_id=artifact_id,
        costing=Costing.from_dict(costing) if costing else None,
        budget_ms=budget_ms,
        seed=seed,
    )
