"""ONNX export of a PyTorch module, and the map from layer names to ONNX nodes."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from edgecompress.inputs import SINGLE, InputSpec

INPUT, OUTPUT = SINGLE, "logits"
WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


def export_onnx(
    model: nn.Module, example_input: Any, path: Path, inputs: InputSpec | None = None
) -> Path:
    """A self-contained ONNX file (weights inside), batch dimension dynamic (and those
    ``inputs.axes`` names, with the output's that follow them), its inputs named
    by ``inputs`` (the experiment's; by default read from ``model``'s signature): ``input`` for
    one tensor, the parameter names or keys of several.

    Uses the TorchScript exporter (``dynamo=False``): 30x faster per trial than the dynamo
    exporter on small models, and its node names carry the module path that maps layers to nodes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = inputs or InputSpec.of(model, example_input)
    args, kwargs = spec.export_args(example_input)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            args,
            buffer,  # type: ignore[arg-type]
            kwargs=kwargs,
            dynamo=False,
            input_names=list(spec.names),
            output_names=[OUTPUT],
            dynamic_axes={
                **{name: spec.axes_of(name) for name in spec.names},
                OUTPUT: spec.output_axes_all(),
            },
            opset_version=17,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    _own_weights(proto)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def _own_weights(model: onnx.ModelProto) -> None:
    """Gives back its own initializer to every weight the exporter deduplicated.

    The exporter stores equal tensors once and feeds the others through an ``Identity`` of the
    first; ONNX Runtime's quantizers quantize only layers whose weight is an initializer, so such
    a layer stayed fp32 while the plan asked int8 (a ResNet's two low-rank factors of one
    channel came out equal, and its most compressed plan could not be built). Each such
    ``Identity`` becomes a copy of the initializer under its output's name.
    """
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers:
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
        else:
            kept.append(node)
    if len(kept) < len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


def layer_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """``{"features.0": "/features/features.0/Conv"}`` for every Conv/Gemm/MatMul node (the
    first one, where a module emits several)."""
    found: dict[str, str] = {}
    for node in model.graph.node:
        layer = layer_of(node.name)
        if node.op_type in WEIGHT_OPS and layer:
            found.setdefault(layer, node.name)
    return found


def layer_of(node_name: str) -> str:
    """The dotted path of the PyTorch module that emitted a node ("" for none).

    The exporter names a node ``/<scope>/.../<Op>``, one scope per module level; a scope is
    either the attribute name (``conv1``) or, below a Sequential or ModuleList, the parent's
    name and the index (``features.0`` under ``features``). ``/blocks.1/skip/skip.0/Conv`` is
    ``blocks.1.skip.0``; ``/features/features.0/Conv`` is ``features.0``.
    """
    path: list[str] = []
    for scope in node_name.split("/")[1:-1]:
        if path and scope.startswith(path[-1] + "."):  # "features.0" below "features"
            path[-1] = scope
        else:
            path.append(scope)
    return ".".join(path)
