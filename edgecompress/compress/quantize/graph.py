"""ONNX graph passes around quantization, and the precision of every layer read back.

The exporter names a node ``/<scope>/.../<module path>/<Op>``; every pass here keeps that
naming, so a layer's node is found again after each step (see ``layer_nodes``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgecompress.compress.onnx_export import WEIGHT_OPS, layer_of


def parts_of(layer: str, layers: Iterable[str]) -> list[str]:
    """A layer and, after a low-rank factorization, its factors (``fc`` -> ``fc.0``, ``fc.1``)."""
    return [n for n in layers if n == layer or n.startswith(layer + ".")]


def gemm_to_matmul(model: onnx.ModelProto, layers: set[str]) -> onnx.ModelProto:
    """Rewrites the Gemm of each named layer (a Linear on 2D input) as MatMul + Add, the form
    ONNX Runtime's dynamic and 4-bit quantizers take; the result is numerically the same."""
    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.op_type != "Gemm" or layer_of(node.name) not in layers:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        bias_ok = len(node.input) < 3 or node.input[2] in inits or attrs.get("beta", 1.0) == 1.0
        plain = not attrs.get("transA", 0) and attrs.get("alpha", 1.0) == 1.0 and bias_ok
        if not plain or node.input[1] not in inits:
            nodes.append(node)  # not a plain Linear: left as it is (read back as planned or not)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        name = node.input[1] + "_matmul"
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), name))
        has_bias = len(node.input) > 2 and node.input[2]
        product = node.output[0] + "_matmul" if has_bias else node.output[0]
        nodes.append(
            helper.make_node("MatMul", [node.input[0], name], [product], node.name + "_MatMul")
        )
        if has_bias:
            bias_name = node.input[2]
            if bias_name in inits and attrs.get("beta", 1.0) != 1.0:
                bias = numpy_helper.to_array(inits[bias_name]) * attrs["beta"]
                bias_name += "_scaled"
                model.graph.initializer.append(
                    numpy_helper.from_array(bias.astype(np.float32), bias_name)
                )
            nodes.append(
                helper.make_node("Add", [product, bias_name], [node.output[0]], node.name + "_Add")
            )
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    _drop_unused_initializers(model)
    return model


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def to_fp16(model: onnx.ModelProto, layers: set[str]) -> onnx.ModelProto:
    """Runs the weight nodes of each named layer in fp16: their weights and biases become
    float16, other inputs are cast to fp16 and the output back to fp32 (a cast pair between two
    consecutive fp16 layers is then removed by ``drop_cast_pairs``)."""
    inits = {i.name: i for i in model.graph.initializer}
    chosen = {n for layer in layers for n in weight_nodes(model).get(layer, [])}
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.name not in chosen:
            nodes.append(node)
            continue
        for i, name in enumerate(node.input):
            if name in inits:
                node.input[i] = name + "_fp16"
                half = numpy_helper.to_array(inits[name]).astype(np.float16)
                model.graph.initializer.append(numpy_helper.from_array(half, node.input[i]))
            elif name:
                node.input[i] = f"{name}_fp16_{len(nodes)}"
                cast = f"{node.name}_fp16_in{i}"
                nodes.append(_cast(name, node.input[i], TensorProto.FLOAT16, cast))
        out = node.output[0]
        node.output[0] = out + "_fp16"
        nodes += [node, _cast(node.output[0], out, TensorProto.FLOAT, node.name + "_fp16_out")]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    _drop_unused_initializers(model)
    return drop_cast_pairs(model, {n.name for n in nodes if n.name.endswith(CAST_SUFFIXES)})


def weight_nodes(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Every Conv/Gemm/MatMul node with a constant weight, by layer (a layer may emit several:
    attention's input and output projections; its activation MatMuls have no weight)."""
    inits = {i.name for i in model.graph.initializer}
    found: dict[str, list[str]] = {}
    for node in model.graph.node:
        layer = layer_of(node.name)
        if layer and node.op_type in WEIGHT_OPS and len(node.input) > 1 and node.input[1] in inits:
            found.setdefault(layer, []).append(node.name)
    return found


CAST_SUFFIXES = ("_fp16_in0", "_fp16_in1", "_fp16_in2", "_fp16_out")


def _cast(src: str, dst: str, to: int, name: str) -> onnx.NodeProto:
    return helper.make_node("Cast", [src], [dst], name, to=to)


def layer_precisions(model: onnx.ModelProto) -> dict[str, str]:
    """``{layer: "int8" | "int4" | "fp16" | "fp32"}`` for every layer with a weight, read from
    the graph: int8 when its weight comes through DequantizeLinear (static QDQ) or it runs as
    ConvInteger/MatMulInteger (dynamic), int4 as MatMulNBits, fp16 when its weight is float16.
    A layer whose nodes differ (attention's projections) reads ``mixed(int8,fp32)``."""
    producers = {out: n for n in model.graph.node for out in n.output}
    dtypes = {i.name: i.data_type for i in model.graph.initializer}
    found: dict[str, set[str]] = {}
    for node in model.graph.node:
        layer = layer_of(node.name)
        if not layer or node.op_type not in KINDS or len(node.input) < 2:
            continue
        weight = node.input[1]
        kind = KINDS[node.op_type]
        if kind == "float":
            source = producers.get(weight)
            if source is not None and source.op_type == "DequantizeLinear":
                if source.input[0] not in dtypes:
                    continue  # a quantized activation MatMul (attention scores): no weight
                kind = "int8"
            elif dtypes.get(weight) == TensorProto.FLOAT16:
                kind = "fp16"
            elif weight in dtypes:
                kind = "fp32"
            else:
                continue  # an activation MatMul (attention scores): no weight
        found.setdefault(layer, set()).add(kind)
    return {
        k: v.pop() if len(v) == 1 else f"mixed({','.join(sorted(v))})" for k, v in found.items()
    }


KINDS = {
    "Conv": "float",
    "Gemm": "float",
    "MatMul": "float",
    "ConvInteger": "int8",
    "MatMulInteger": "int8",
    "MatMulNBits": "int4",
}


def drop_cast_pairs(model: onnx.ModelProto, ours: set[str]) -> onnx.ModelProto:
    """Removes round trips ``x -> Cast(fp16) -> Cast(fp32)`` (and the reverse) between two of
    the casts ``ours`` (named by ``to_fp16``): the consumer reads ``x`` itself. Exact for fp16 ->
    fp32 -> fp16, and for fp32 -> fp16 -> fp32 it only drops a loss of precision."""
    producers = {out: n for n in model.graph.node for out in n.output}
    outputs = {o.name for o in model.graph.output}
    rename: dict[str, str] = {}
    for node in model.graph.node:
        first = producers.get(node.input[0]) if node.name in ours else None
        if first is None or first.name not in ours or node.output[0] in outputs:
            continue
        pair = (_cast_to(first), _cast_to(node))
        if pair in (
            (TensorProto.FLOAT16, TensorProto.FLOAT),
            (TensorProto.FLOAT, TensorProto.FLOAT16),
        ):
            rename[node.output[0]] = first.input[0]
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    _drop_dead_nodes(model)
    return model


def _cast_to(node: onnx.NodeProto) -> int:
    return int(next(helper.get_attribute_value(a) for a in node.attribute if a.name == "to"))


def _drop_dead_nodes(model: onnx.ModelProto) -> None:
    """Removes nodes whose outputs nobody reads (repeatedly), then unused initializers."""
    while True:
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
    _drop_unused_initializers(model)


def int8_layers(model: onnx.ModelProto) -> set[str]:
    """The layers that run in int8 (static QDQ or dynamic)."""
    return {layer for layer, p in layer_precisions(model).items() if p == "int8"}
