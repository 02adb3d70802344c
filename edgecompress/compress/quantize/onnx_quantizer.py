"""Per-layer precision of an exported model in ONNX Runtime: int4, int8, fp16 and fp32 layers
in one graph, and emulated n-bit layers snapped onto their grid.

Passes, in order: emulated layers' weights are snapped to their grid; int8 (static QDQ with
calibration, or dynamic, which turns a Gemm into MatMul itself); int4 (MatMulNBits, on Linear
layers rewritten from Gemm to MatMul, the form it takes); fp16 (the layers' weight
nodes, with casts around them, none between two consecutive fp16 layers). The result is read
back from the graph: a layer whose precision is not the one planned is an ``InvalidPlan``, and
no file is left behind.
"""

from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgecompress.compress.candidate import Report
from edgecompress.compress.onnx_export import WEIGHT_OPS, layer_of
from edgecompress.compress.quantize.calibration import (
    METHODS,
    CalibrationError,
    FeedReader,
    Source,
    calibration_batches,
)
from edgecompress.compress.quantize.fake import quantize_weight
from edgecompress.compress.quantize.graph import (
    gemm_to_matmul,
    layer_precisions,
    parts_of,
    to_fp16,
    weight_nodes,
)
from edgecompress.compress.quantize.recipe import INT4_BLOCK, QuantRecipe, check_target, recipe
from edgecompress.plan import InvalidPlan, Plan
from edgecompress.targets import Target
from edgecompress.targets.device import int8_pairs_saturate
from edgecompress.targets.profile import LOCAL

LINEAR_OPS = ("Gemm", "MatMul")
ORT_LOGGERS = (
    "onnxruntime.quantization.matmul_nbits_quantizer",
    "onnxruntime.quantization.shape_inference",
)


class OnnxQuantizer:
    """``apply(src, dst, plan)`` writes ``dst`` with each layer at the precision the plan gives
    it (``bits.<layer>``; unnamed layers stay fp32); its report: ``quantization``, the recipe
    it built (each layer's precision, the method, calibration samples really used). A
    precision ``target`` cannot run (default: the local CPU) is an ``InvalidPlan``.

    ``calibration`` returns fresh input batches (float32 arrays, or dicts by input name) each
    time it is called; it is checked against the model before anything is calibrated.
    """

    def __init__(self, calibration: Source, *, target: Target | None = None) -> None:
        self.calibration = calibration
        self.target = target or Target()
        self._recipe = QuantRecipe()
        # the local CPU's int8 kernels would saturate with 8-bit weights
        self._saturates = self.target.name == LOCAL and int8_pairs_saturate()
        self._reduce_range = False

    def apply(self, src: Path, dst: Path, plan: Plan) -> Report:
        model = onnx.load(str(src))
        self._recipe = _expand(plan, model, int4="int4" in self.target.precisions)
        check_target(self._recipe, self.target)
        # weights in 7 bits where 8 would saturate, unless the plan rounded its int8 weights
        # onto their 8-bit grid in PyTorch (stochastic rounding, QAT): the file keeps that grid
        trained = set(self._recipe.layers("int8")) & set(self._recipe.rounded())
        self._reduce_range = self._saturates and not trained
        wanted = {layer: p for layer, p in self._recipe.precisions.items()}
        if all(p == "fp32" for p in wanted.values()):
            shutil.copyfile(src, dst)
            return self._report()
        try:
            with _quiet():
                self._passes(model, dst)
            _check(onnx.load(str(dst)), wanted)
            _loads(dst)
        except (InvalidPlan, CalibrationError, ImportError):
            dst.unlink(missing_ok=True)  # a refused plan leaves no output behind
            raise  # (a missing package is the installation's fault, never the plan's)
        except Exception as exc:  # noqa: BLE001 - ORT's quantizers raise anything
            dst.unlink(missing_ok=True)
            raise InvalidPlan(
                f"bits: ONNX Runtime cannot build this combination of precisions "
                f"({type(exc).__name__}: {str(exc)[:300]})"
            ) from None
        return self._report()

    def _report(self) -> Report:
        report = self._recipe.to_dict()
        if self._saturates and self._recipe.layers("int8"):
            report["int8_weights"] = (
                "7-bit range: this CPU has no VNNI, and ONNX Runtime's uint8 x int8 kernels "
                "would saturate with full 8-bit weights"
                if self._reduce_range
                else "the 8-bit grid they were rounded onto in training, though this CPU has "
                "no VNNI and ONNX Runtime's uint8 x int8 kernels may saturate with it"
            )
        return {"quantization": report}

    def _passes(self, model: onnx.ModelProto, dst: Path) -> None:
        r = self._recipe
        snap_weights(model, r.emulated())
        # int8 first: its passes cannot type the outputs of MatMulNBits, and its graph
        # optimization fuses a MatMul + Add back (renamed) before it reads the exclusions
        if r.layers("int8"):
            model = self._int8(model, dst)
        if r.layers("int4"):
            model = _int4(gemm_to_matmul(model, set(r.layers("int4"))), r.layers("int4"))
        if r.layers("fp16"):
            model = to_fp16(model, set(r.layers("fp16")))
        onnx.save(model, str(dst))

    def _int8(self, model: onnx.ModelProto, dst: Path) -> onnx.ModelProto:
        r = self._recipe
        int8 = set(r.layers("int8"))
        exclude = [  # attention's activation MatMuls follow their layer
            n.name
            for n in model.graph.node
            if n.op_type in WEIGHT_OPS and layer_of(n.name) not in int8
        ]
        src, out = dst.with_suffix(".in.onnx"), dst.with_suffix(".int8.onnx")
        onnx.save(model, str(src))
        try:
            if r.method == "dynamic":
                # ORT rewrites a remaining Gemm as "<name>_MatMul" before it reads the exclusions
                exclude += [n + "_MatMul" for n in exclude if n.endswith("/Gemm")]
                quantize_dynamic(
                    str(src),
                    str(out),
                    per_channel=True,
                    reduce_range=self._reduce_range,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=exclude,
                    op_types_to_quantize=["Conv", "MatMul"],
                )
            else:
                self._static(model, src, out, exclude)
            return onnx.load(str(out))
        finally:
            for path in (src, out, dst.with_suffix(".pre.onnx")):
                path.unlink(missing_ok=True)

    def _static(self, model: onnx.ModelProto, src: Path, out: Path, exclude: list[str]) -> None:
        r = self._recipe
        feeds = calibration_batches(self.calibration, model, r.calibration_samples)
        taken = sum(len(next(iter(f.values()))) for f in feeds)
        self._recipe = r = replace(r, calibration_samples=taken)  # what calibration really saw
        prepared = out.with_suffix(".pre.onnx")
        _pre_process(src, prepared)
        quantize_static(
            str(prepared),
            str(out),
            FeedReader(feeds),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=self._reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            op_types_to_quantize=["Conv", "Gemm", "MatMul"],
            calibrate_method=METHODS[r.calibration],
            extra_options={"CalibMaxIntermediateOutputs": 64},
        )


def _expand(plan: Plan, model: onnx.ModelProto, *, int4: bool) -> QuantRecipe:
    """The recipe per ONNX layer: a factorized layer (``fc``) is quantized as its factors are."""
    nodes = weight_nodes(model)
    bits = plan.section("bits")
    unknown = sorted(layer for layer in bits if not parts_of(layer, nodes))
    if unknown:
        raise InvalidPlan(f"bits: no ONNX node found for layers {unknown}")
    expanded = dict(plan.to_dict())
    for layer, b in bits.items():
        del expanded[f"bits.{layer}"]
        expanded.update({f"bits.{part}": b for part in parts_of(layer, nodes)})
    ops = {n.name: n.op_type for n in model.graph.node}
    linear = {layer for layer, ns in nodes.items() if all(ops[n] in LINEAR_OPS for n in ns)}
    return recipe(Plan(expanded), linear, int4=int4)


def snap_weights(model: onnx.ModelProto, bits: dict[str, int]) -> None:
    """Rounds each emulated layer's weight to the nearest point of its per-output-channel
    symmetric grid (exact when PyTorch has already rounded it, with any rounding)."""
    inits = {i.name: i for i in model.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    for layer, names in weight_nodes(model).items():
        for node in (by_name[n] for n in names if layer in bits):
            _snap(node, inits[node.input[1]], bits[layer])


def _snap(node: onnx.NodeProto, init: onnx.TensorProto, bits: int) -> None:
    weight = numpy_helper.to_array(init)
    axis = 1 if node.op_type == "MatMul" else 0  # MatMul holds the weight transposed
    init.CopyFrom(numpy_helper.from_array(on_grid(weight, bits, axis), init.name))


def on_grid(weight: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """``weight`` to the nearest point of its per-channel (along ``axis``) symmetric grid: the
    grid PyTorch rounds onto (``quantize_weight``)."""
    channels_first = torch.from_numpy(np.ascontiguousarray(np.moveaxis(weight, axis, 0)))
    snapped = quantize_weight(channels_first, bits).numpy()
    return np.moveaxis(snapped, 0, axis).astype(weight.dtype)


def _int4(model: onnx.ModelProto, layers: list[str]) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    nodes = weight_nodes(model)
    include = [n for layer in layers for n in nodes[layer]]
    exclude = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in include]
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=4,
        block_size=INT4_BLOCK,
        is_symmetric=True,
        nodes_to_include=include,
        nodes_to_exclude=exclude,
    )
    quantizer.process()
    return quantizer.model.model


def _check(model: onnx.ModelProto, wanted: dict[str, str]) -> None:
    got = layer_precisions(model)
    expected = {layer: "fp32" if p.startswith("emulated") else p for layer, p in wanted.items()}
    wrong = {
        layer: f"{p} planned, {got.get(layer, 'no node')} built"
        for layer, p in expected.items()
        if got.get(layer) != p
    }
    others = {layer: p for layer, p in got.items() if layer not in expected and p != "fp32"}
    if wrong or others:
        raise InvalidPlan(
            f"bits: ONNX Runtime did not build the planned precisions: {wrong or others}"
        )


def _loads(path: Path) -> None:
    """ONNX Runtime accepts the result (types agree across the precision boundaries)."""
    import onnxruntime as ort

    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _pre_process(src: Path, dst: Path) -> None:
    """ORT's pre-processing; where its symbolic shape inference fails (e.g. on the reshapes of
    multi-head attention), without it (ONNX shape inference and graph optimization still run)."""
    try:
        quant_pre_process(str(src), str(dst))
    except Exception:  # noqa: BLE001 - ORT raises bare AssertionError/Exception here
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


@contextmanager
def _quiet() -> Iterator[None]:
    """ORT's quantizers log every node at INFO, and its calibrators print their progress."""
    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in ORT_LOGGERS]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with redirect_stdout(io.StringIO()):
            yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)
