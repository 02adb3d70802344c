"""A model as the runtime runs it: the kernels of its optimized graph, each a table key and a
micro-model that runs that kernel alone.

ONNX Runtime rewrites a graph before running it: it folds batch norms into convolutions, fuses
activations (``FusedConv``), turns QDQ pairs around a layer into ``QLinearConv``, moves int8
chains to channels-last with ``Transpose`` nodes, inserts ``Cast``s around float16 layers. Which
of these happen depends on the neighbours of a layer, so the table is keyed on the optimized
graph, not on the PyTorch layers: a model's latency comes from its kernels' entries (the
quantize/dequantize/transpose/cast kernels between precisions included), calibrated on whole
models (``targets.calibrate``), plus the call overhead.

The graph is optimized at ONNX Runtime's full level without the NCHWc layout transformer (its
rewrite is specific to x86 with AVX2/AVX-512; a table must describe a graph any CPU runs).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from edgecompress.targets.table import Layer

CONV_OPS = ("Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcFusedConv", "ConvTranspose")
MATMUL_OPS = (
    "Gemm",
    "FusedGemm",
    "MatMul",
    "QGemm",
    "QLinearMatMul",
    "MatMulInteger",
    "MatMulNBits",
    "FusedMatMul",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
)
_OWN_COLUMNS = ("kernel_shape", "group", "activation", "K", "N")  # in other columns
_SKIPPED_ATTRS = ("activation_params",)
_PRECISION = {
    np.dtype(np.float32): "fp32",
    np.dtype(np.float16): "fp16",
    np.dtype(np.uint8): "int8",
    np.dtype(np.int8): "int8",
    np.dtype(np.int32): "int32",
    np.dtype(np.int64): "int64",
    np.dtype(np.bool_): "bool",
}
DISABLED = ["NchwcTransformer"]


def optimized(model: bytes, *, threads: int = 1) -> onnx.ModelProto:
    """The graph ONNX Runtime runs (full optimization, NCHWc layout left out)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(out)
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        ort.InferenceSession(
            model, options, providers=["CPUExecutionProvider"], disabled_optimizers=DISABLED
        )
        return onnx.load(str(out))


def observed(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor's value for ``feed``: graph inputs, initializers and all node outputs."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name and name not in present:
                probe.graph.output.append(onnx.ValueInfoProto(name=name))
                present.add(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    sess = ort.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed), strict=True))
    values.update(feed)
    values.update({i.name: numpy_helper.to_array(i) for i in model.graph.initializer})
    return values


@dataclass(frozen=True)
class Kernel:
    """One node of the optimized graph: its table key, and what its micro-model needs."""

    layer: Layer
    node: onnx.NodeProto
    graph: onnx.ModelProto  # the optimized model it belongs to (for opsets, initializers)
    values: dict[str, np.ndarray]

    def micro(self) -> bytes:
        """This kernel alone: activations as inputs, weights and shape tensors as initializers."""
        inits = {i.name for i in self.graph.graph.initializer}
        inputs, initializers = [], []
        for name in dict.fromkeys(n for n in self.node.input if n):
            value = self.values[name]
            constant = name in inits or value.dtype in (np.int64, np.int32) or value.ndim == 0
            if constant:
                initializers.append(numpy_helper.from_array(np.asarray(value), name))
            else:
                inputs.append(_info(name, value))
        outputs = [_info(n, self.values[n]) for n in self.node.output if n]
        return self._model([self.node], inputs, outputs, initializers)

    def null(self) -> bytes:
        """The micro-model's inputs and outputs with no node at all: each output is fed as an
        input and handed back. Its time is the call's fixed cost and the copying of inputs and
        outputs, which the whole model pays once, not once per kernel."""
        micro = onnx.load_from_string(self.micro())
        inputs = list(micro.graph.input) + list(micro.graph.output)
        return self._model([], inputs, list(micro.graph.output), [])

    def _model(
        self,
        nodes: list[onnx.NodeProto],
        inputs: list[onnx.ValueInfoProto],
        outputs: list[onnx.ValueInfoProto],
        initializers: list[onnx.TensorProto],
    ) -> bytes:
        graph = helper.make_graph(nodes, "kernel", inputs, outputs, initializers)
        model = helper.make_model(graph, opset_imports=list(self.graph.opset_import))
        model.ir_version = self.graph.ir_version
        return model.SerializeToString()


def _info(name: str, value: np.ndarray) -> onnx.ValueInfoProto:
    elem = helper.np_dtype_to_tensor_dtype(value.dtype)
    return helper.make_tensor_value_info(name, elem, list(value.shape))


def kernels(model: bytes, feed: dict[str, np.ndarray], *, threads: int = 1) -> list[Kernel]:
    """The kernels ``model`` runs for an input like ``feed`` (its batch size matters)."""
    graph = optimized(model, threads=threads)
    values = observed(graph, feed)
    inits = {i.name for i in graph.graph.initializer}
    return [Kernel(layer_of(node, values, inits), node, graph, values) for node in graph.graph.node]


def layer_of(node: onnx.NodeProto, values: dict[str, np.ndarray], inits: set[str]) -> Layer:
    """The table key of one kernel: its kind (op, precision, fused activation, kernel size,
    groups, output spatial size, other attributes) and its widths and work."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    acts = [values[n] for n in node.input if n and n not in inits]
    first = acts[0] if acts else values[node.input[0]]
    outs = [values[n] for n in node.output if n]
    out = outs[0]
    precision = "int4" if node.op_type == "MatMulNBits" else _PRECISION.get(first.dtype, "other")
    fused = attrs.get("activation", b"")
    fused = fused.decode() if isinstance(fused, bytes) else str(fused)
    other = {k: v for k, v in attrs.items() if k not in _OWN_COLUMNS + _SKIPPED_ATTRS}
    common: dict[str, Any] = {
        "op": node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}",
        "precision": precision,
        "fused": fused,
        "attrs": _canonical(other),
        "weights": int(sum(values[n].nbytes for n in set(node.input) if n in inits)),
    }
    if node.op_type in CONV_OPS:
        weight = _weight(node, values, inits)
        channels_last = bool(attrs.get("channels_last", 0))
        spatial = out.shape[1:-1] if channels_last else out.shape[2:]
        groups = int(attrs.get("group", 1))
        per_output = int(np.prod(weight.shape[1:]))
        return Layer(
            **common,
            in_channels=int(weight.shape[1]) * groups,
            out_channels=int(weight.shape[0]),
            work=float(out.size * per_output),
            kernel="x".join(str(k) for k in weight.shape[2:]),
            groups=groups,
            spatial="x".join(str(s) for s in spatial),
        )
    if node.op_type in MATMUL_OPS:
        k = int(attrs.get("K", 0)) or int(
            first.shape[0] if attrs.get("transA") else first.shape[-1]
        )
        n = int(attrs.get("N", 0)) or int(out.shape[-1])
        return Layer(**common, in_channels=k, out_channels=n, work=float(out.size * k))
    size_in, size_out = int(first.size), int(sum(o.size for o in outs))
    return Layer(
        **common, in_channels=size_in, out_channels=size_out, work=float(size_in + size_out)
    )


def _weight(node: onnx.NodeProto, values: dict[str, np.ndarray], inits: set[str]) -> np.ndarray:
    weights = [values[n] for n in node.input if n in inits and values[n].ndim >= 3]
    if not weights:
        raise ValueError(f"{node.op_type} node {node.name}: no weight initializer found")
    return weights[0]


def _canonical(attrs: dict[str, object]) -> str:
    """``name=value`` pairs sorted, lists joined by ``,``; tensors by their shape."""
    parts = []
    for name in sorted(attrs):
        value = attrs[name]
        if isinstance(value, bytes):
            text = value.decode()
        elif isinstance(value, list | tuple):
            text = ",".join(_short(v) for v in value)
        elif isinstance(value, onnx.TensorProto):
            text = "tensor" + "x".join(str(d) for d in value.dims)
        else:
            text = _short(value)
        parts.append(f"{name}={text}")
    return ";".join(parts)


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
