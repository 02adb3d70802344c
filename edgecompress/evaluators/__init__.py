"""Evaluators: ``(candidate) -> metrics``; units in the keys."""

from edgecompress.evaluators.latency import (
    MeasuredLatency,
    Measurement,
    input_for,
    measure_absolute_ms,
    measure_ratio,
)
from edgecompress.evaluators.metrics import OnnxMetrics, onnx_accuracy, onnx_outputs
from edgecompress.evaluators.runtime import session
from edgecompress.evaluators.size import file_size

__all__ = [
    "MeasuredLatency",
    "Measurement",
    "OnnxMetrics",
    "file_size",
    "input_for",
    "measure_absolute_ms",
    "measure_ratio",
    "onnx_accuracy",
    "onnx_outputs",
    "session",
]
