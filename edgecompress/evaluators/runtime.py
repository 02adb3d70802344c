"""ONNX Runtime sessions configured as the target runs them."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def session(path: Path | str | bytes, *, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with a fixed thread count, sequential execution, all graph optimizations."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
