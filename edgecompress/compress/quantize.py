"""Per-layer int8 with ONNX Runtime static quantization (QDQ, per-channel weights).

Layers whose plan says ``bits.<layer> = 32`` are excluded by node name and stay fp32 in the
graph; the rest are quantized with activations calibrated (MinMax) on training samples. A layer
replaced by its low-rank factors is quantized as its factors are.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgecompress.compress.onnx_export import INPUT, layer_nodes
from edgecompress.plan import InvalidPlan, Plan


class _Reader(CalibrationDataReader):
    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self._batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT: np.ascontiguousarray(batch, dtype=np.float32)}


class StaticInt8Quantizer:
    """``apply(src, dst, plan)`` writes ``dst`` with the int8 layers of ``plan``; returns its path.

    ``calibration`` returns fresh input batches (float32 arrays) each time it is called.
    """

    def __init__(self, calibration: Callable[[], Iterable[np.ndarray]]) -> None:
        self.calibration = calibration

    def apply(self, src: Path, dst: Path, plan: Plan) -> Path:
        bits = plan.section("bits")
        bad = {layer: b for layer, b in bits.items() if isinstance(b, bool) or b not in (8, 32)}
        if bad:
            raise InvalidPlan(f"bits: only 8 (int8) and 32 (fp32) are supported, got {bad}")
        nodes = layer_nodes(onnx.load(str(src)))
        unknown = sorted(layer for layer in bits if not _parts(layer, nodes))
        if unknown:
            raise InvalidPlan(f"bits: no ONNX node found for layers {unknown}")
        # a factorized layer ("fc") is quantized as its factors ("fc.0", "fc.1") are
        bits = {part: b for layer, b in bits.items() for part in _parts(layer, nodes)}
        if not any(b == 8 for b in bits.values()):
            shutil.copyfile(src, dst)
            return dst
        # only the layers the plan says are int8 are quantized; all others stay fp32
        keep_fp32 = [node for layer, node in nodes.items() if bits.get(layer, 32) != 8]
        prepared = dst.with_suffix(".pre.onnx")
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # ORT's quantizer logs every node at INFO
        try:
            # ORT's recommended pre-processing (shape inference, graph optimization); it keeps
            # node names, which the exclusion of fp32 layers relies on.
            _pre_process(src, prepared)
            quantize_static(
                str(prepared),
                str(dst),
                _Reader(self.calibration()),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=keep_fp32,
            )
        finally:
            root.setLevel(level)
            prepared.unlink(missing_ok=True)
        wanted = {layer for layer, b in bits.items() if b == 8}
        got = int8_layers(onnx.load(str(dst)))
        if got != wanted:
            dst.unlink()  # a refused plan leaves no output behind
            raise InvalidPlan(
                f"bits: ONNX Runtime quantized {sorted(got)}, the plan asked for {sorted(wanted)}"
            )
        return dst


def _pre_process(src: Path, dst: Path) -> None:
    """ORT's pre-processing; where its symbolic shape inference fails (e.g. on the reshapes of
    multi-head attention), without it (ONNX shape inference and graph optimization still run)."""
    try:
        quant_pre_process(str(src), str(dst))
    except Exception:  # noqa: BLE001 - ORT raises bare AssertionError/Exception here
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def _parts(layer: str, nodes: dict[str, str]) -> list[str]:
    return [n for n in nodes if n == layer or n.startswith(layer + ".")]


def int8_layers(model: onnx.ModelProto) -> set[str]:
    """Layers whose weight reaches their Conv/Gemm/MatMul through DequantizeLinear (int8)."""
    producers = {out: n for n in model.graph.node for out in n.output}
    found = set()
    for layer, node_name in layer_nodes(model).items():
        node = next(n for n in model.graph.node if n.name == node_name)
        weight = producers.get(node.input[1]) if len(node.input) > 1 else None
        if weight is not None and weight.op_type == "DequantizeLinear":
            found.add(layer)
    return found
