"""A candidate's latency from a table: its kernels' entries, calibrated, plus the call overhead."""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgecompress.compress import compress
from edgecompress.evaluators.latency import input_for
from edgecompress.experiment import Experiment
from edgecompress.plan import Plan
from edgecompress.tables.bundle import latency_plan
from edgecompress.targets.kernels import kernels
from edgecompress.targets.table import LatencyTable, Prediction


def predict_file(table: LatencyTable, model: bytes, experiment: Experiment) -> Prediction:
    """The prediction for an ONNX model (as the search exports it) at the target's batch."""
    feed = input_for(experiment)
    found = kernels(model, feed, threads=experiment.target.threads)
    return table.predict([k.layer for k in found])


def build_for_latency(experiment: Experiment, plan: Plan, workdir: Path) -> bytes:
    """The plan's deployable ONNX file without fine-tuning: the graph whose latency it has."""
    candidate = compress(experiment, latency_plan(plan), workdir)
    return Path(candidate.onnx_path).read_bytes()


def predict_plan(table: LatencyTable, experiment: Experiment, plan: Plan) -> Prediction:
    with tempfile.TemporaryDirectory() as tmp:
        model = build_for_latency(experiment, plan, Path(tmp))
    return predict_file(table, model, experiment)
