"""One trial, run where a worker runs: compress the plan, evaluate it, hand back metrics and ONNX.

The worker imports the experiment itself (from its ``FILE.py:NAME`` reference); only the
reference, the plan and numbers cross processes.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.compress import compress, export_onnx
from edgecompress.evaluators import MeasuredLatency, OnnxAccuracy, file_size, input_for
from edgecompress.experiment import Experiment, load_experiment
from edgecompress.gate import CpuGate
from edgecompress.plan import Plan
from edgecompress.search.costing import Costing
from edgecompress.targets.table import Prediction, TableError


@dataclass(frozen=True)
class Outcome:
    """What a finished trial hands back to the driver."""

    metrics: dict[str, float]
    onnx_path: str  # the deployable file, in the study's staging folder until the driver stores it
    notes: dict[str, Any] = field(default_factory=dict)
    screened: bool = False  # predicted over the budget: never fine-tuned, no file


@dataclass(frozen=True)
class Reference:
    """The uncompressed model as ONNX bytes, and the input a measurement feeds."""

    onnx: bytes
    feed: np.ndarray


def reference_of(experiment: Experiment) -> Reference:
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(experiment.model(), experiment.example_input, Path(tmp) / "ref.onnx")
        data = path.read_bytes()
    return Reference(
        data, input_for(experiment.example_input.detach().cpu().numpy(), experiment.target)
    )


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
    staging: str | Path,
    costing: Costing | None = None,
    budget_ms: float | None = None,
) -> Outcome:
    """Compress, then evaluate the ONNX artifact: accuracy in ORT, latency (measured, or from
    the target's table), size. With a table that screens, a plan predicted over ``budget_ms``
    is handed back ``screened`` before anything is trained.

    The ONNX file is left in ``staging`` (a folder the driver can read: local, or shared by the
    cluster) for the driver to store with the trial.
    """
    gate = CpuGate()
    start = time.perf_counter()
    notes: dict[str, Any] = {}
    if costing is not None and costing.screen and budget_ms is not None:
        with gate.work():
            estimate = _table_estimate(costing, experiment, plan, notes)
        if estimate is not None and costing.over_budget(estimate, budget_ms):
            return Outcome(
                metrics={
                    "predicted_latency_ms": estimate.latency_ms,
                    "predicted_uncertainty_ms": estimate.uncertainty_ms,
                    "screen_s": time.perf_counter() - start,
                },
                onnx_path="",
                notes={
                    "screened": f"predicted {estimate.latency_ms:.4f} ms, budget "
                    f"{budget_ms:.4f} ms: not fine-tuned"
                },
                screened=True,
            )
    with tempfile.TemporaryDirectory() as tmp:
        candidate = compress(experiment, plan, Path(tmp), gate=gate.work)
        with gate.work():
            metrics = OnnxAccuracy(experiment.task)(candidate)
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
        Path(staging).mkdir(parents=True, exist_ok=True)
        kept = Path(staging) / f"{plan.key}-{uuid.uuid4().hex[:8]}.onnx"
        shutil.copyfile(candidate.onnx_path, kept)
    metrics["trial_s"] = time.perf_counter() - start
    metrics["gate_wait_s"] = gate.waited_s
    return Outcome(metrics=metrics, onnx_path=str(kept), notes={**candidate.notes, **notes})


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
    staging: str,
    costing: dict[str, Any] | None = None,
    budget_ms: float | None = None,
) -> Outcome:
    """The entry point of a worker in another process: imports the experiment itself."""
    experiment, reference = _worker_context(ref)
    return run_trial(
        experiment,
        Plan.from_dict(plan),
        reference=reference,
        reference_ms=reference_ms,
        staging=staging,
        costing=Costing.from_dict(costing) if costing else None,
        budget_ms=budget_ms,
    )
