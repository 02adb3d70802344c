"""OpenVINO as a target runtime: the deployed ONNX file compiled by OpenVINO's CPU plugin, timed
and scored there (``Target(runtime="openvino")``).

The file is the one ONNX Runtime would run (QDQ int8 included: OpenVINO runs its quantized
operations in int8). It is compiled for latency (one stream, the target's thread count) and in
fp32 (``INFERENCE_PRECISION_HINT``): on a CPU with bf16 units OpenVINO would otherwise run an
fp32 model in bf16, and the metrics would no longer be those of the file the search scored.
"""

from __future__ import annotations

import importlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.errors import EdgeCompressError
from edgecompress.targets.runner import Timed


def _openvino() -> Any:
    try:
        return importlib.import_module("openvino")
    except ImportError:
        raise EdgeCompressError(
            "the target's runtime is OpenVINO, which is not installed: pip install "
            "'edgecompress[openvino]'"
        ) from None


def read(model: str | bytes | Path) -> Any:
    """``model`` (a path or ONNX bytes) read by OpenVINO, not yet compiled."""
    core = _openvino().Core()
    if not isinstance(model, bytes):
        return core.read_model(str(model))
    fd, name = tempfile.mkstemp(suffix=".onnx")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model)
        return core.read_model(name)
    finally:
        os.unlink(name)


def compiled(
    model: str | bytes | Path | Any, threads: int, shapes: dict[str, tuple[int, ...]] | None = None
) -> Any:
    """``model`` (a path, ONNX bytes or a model ``read`` returned) compiled by OpenVINO's CPU
    plugin for latency; ``shapes`` (``{input name: shape}``) fixes its inputs' shapes first, as
    a deployment at one batch size does (otherwise they stay as exported: the batch dynamic)."""
    net = read(model) if isinstance(model, (str, bytes, Path)) else model
    if shapes:
        net.reshape({name: list(shape) for name, shape in shapes.items()})
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
    }
    return _openvino().Core().compile_model(net, "CPU", config)


def input_names(model: Any) -> list[str]:
    """The input names of a model (read or compiled): each input's first name, the ONNX one."""
    return [port.get_any_name() for port in model.inputs]


class OpenVinoTimed(Timed):
    """``runner.Timed`` on OpenVINO: one infer request whose input tensors are set once (as
    ONNX Runtime's session is fed the same arrays each call)."""

    def __init__(
        self,
        model: str | bytes | Path,
        threads: int,
        feed: np.ndarray | dict[str, np.ndarray],
    ) -> None:
        net = read(model)
        wanted = input_names(net)
        if not isinstance(feed, dict):  # one array: the model's one input
            if len(wanted) != 1:
                raise ValueError(f"the ONNX model takes inputs {wanted}: feed {{name: array}}")
            feed = {wanted[0]: feed}
        missing = [n for n in wanted if n not in feed]
        if missing:
            raise ValueError(
                f"the ONNX model takes inputs {wanted}; the feed has {sorted(feed)} (missing "
                f"{missing}). Export it with the experiment's input names."
            )
        self.feed = {n: np.ascontiguousarray(feed[n]) for n in wanted}
        # static shapes, the feed's: as deployed at one batch size
        self.model = compiled(net, threads, {n: a.shape for n, a in self.feed.items()})
        self.request = self.model.create_infer_request()
        ov = _openvino()
        for name, array in self.feed.items():
            self.request.set_tensor(name, ov.Tensor(array))
        self.calls = 1

    def block_ms(self) -> float:
        infer = self.request.infer
        start = time.perf_counter_ns()
        for _ in range(self.calls):
            infer()
        return (time.perf_counter_ns() - start) / self.calls / 1e6


def outputs(
    model: str | bytes | Path,
    feed: np.ndarray | dict[str, np.ndarray],
    *,
    threads: int,
    batch_size: int,
) -> np.ndarray:
    """The compiled model's first output on ``feed`` (one array, or ``{input name: array}``),
    in batches."""
    net = compiled(model, threads)
    wanted = input_names(net)
    if not isinstance(feed, dict):
        feed = {wanted[0]: feed}
    total = len(next(iter(feed.values())))
    request = net.create_infer_request()
    parts = []
    for start in range(0, total, batch_size):
        batch = {n: np.ascontiguousarray(feed[n][start : start + batch_size]) for n in wanted}
        result = request.infer(batch)
        parts.append(np.array(result[net.outputs[0]]))
    return np.concatenate(parts)
