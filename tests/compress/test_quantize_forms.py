"""Quantization in all its forms: rounding, fake-quant training, calibration, dynamic, fp16,
int4, emulated widths, QAT through the pipeline, and the recipe on the trial."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edgecompress.compress import compress, export_onnx, layer_precisions
from edgecompress.compress.quantize import (
    CalibrationError,
    OnnxQuantizer,
    fake_quant_training,
    quantize_weight,
    round_weights,
)
from edgecompress.compress.quantize.fake import channel_scale
from edgecompress.compress.sparsity import UnstructuredPruner, finalize
from edgecompress.evaluators import session
from edgecompress.plan import InvalidPlan, Plan
from edgecompress.targets import Target


def _levels_per_channel(weight: np.ndarray, axis: int = 0) -> int:
    moved = np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)
    return max(len(np.unique(np.round(row, 6))) for row in moved)


def test_stochastic_rounding_is_unbiased_and_seeded() -> None:
    w = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    draws = torch.stack(
        [
            quantize_weight(w, 4, rounding="stochastic", generator=torch.Generator().manual_seed(s))
            for s in range(2000)
        ]
    )
    scale = channel_scale(w, 4)
    # every draw is on the grid, one of the two neighbours of w
    q = draws / scale
    assert torch.allclose(q, q.round(), atol=1e-4)
    assert ((draws - w).abs() <= scale + 1e-6).all()
    # unbiased: the mean of the draws is w (standard error <= scale / (2 * sqrt(2000)))
    assert ((draws.mean(0) - w).abs() <= 4 * scale / (2 * 2000**0.5)).all()
    nearest = quantize_weight(w, 4)
    assert (draws.mean(0) - w).abs().mean() < (nearest - w).abs().mean() / 5
    again = quantize_weight(w, 4, rounding="stochastic", generator=torch.Generator().manual_seed(7))
    assert torch.equal(again, draws[7])
    with pytest.raises(InvalidPlan, match="rounding"):
        quantize_weight(w, 4, rounding="up")


def test_stochastically_rounded_weights_reach_the_int8_model_exactly(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = tiny.model()
    round_weights(model, {"fc": 8}, rounding="stochastic", seed=3)
    expected = (model.fc.weight / channel_scale(model.fc.weight, 8)).round().detach().numpy()
    src = export_onnx(model, tiny.example_input, tmp_path / "fp32.onnx")
    out = tmp_path / "q.onnx"
    plan = Plan({"bits.fc": 8, "method.rounding": "stochastic"})  # as the pipeline's plan says
    OnnxQuantizer(tiny.task.calibration_batches).apply(src, out, plan)
    graph = onnx.load(str(out)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    gemm = next(n for n in graph.node if n.name == "/fc/Gemm")
    dq = next(n for n in graph.node if n.output[0] == gemm.input[1])
    assert np.array_equal(inits[dq.input[0]].astype(np.float32), expected)


def test_fake_quant_training_uses_quantized_weights_and_trains_the_fp32_ones(tiny) -> None:  # type: ignore[no-untyped-def]
    model = tiny.model().train()
    x = torch.randn(8, 24)
    quantized = tiny.model().train()
    with torch.no_grad():
        quantized.conv2.weight.copy_(quantize_weight(quantized.conv2.weight, 3))
    keys = set(model.state_dict())
    with fake_quant_training(model, {"conv2": 3}):
        out = model(x)
        torch.testing.assert_close(out, quantized(x))
        out.sum().backward()
        assert model.conv2.weight_fp.grad is not None  # straight-through to the fp32 weight
    assert isinstance(model.conv2.weight, nn.Parameter) and set(model.state_dict()) == keys
    assert not model.conv2._forward_pre_hooks


def test_fake_quant_training_on_a_pruning_mask(tiny) -> None:  # type: ignore[no-untyped-def]
    model = UnstructuredPruner().apply(tiny.model(), Plan({"sparsity.fc": 0.5}))[0]
    with fake_quant_training(model, {"fc": 4}, activations=["fc"]):
        model(torch.randn(4, 24)).sum().backward()
    finalize(model)
    round_weights(model, {"fc": 4}, rounding="nearest", seed=0)
    w = model.fc.weight.detach().numpy()
    assert (w == 0).mean() >= 0.5 - 1e-3  # the zeros survive
    assert _levels_per_channel(w) <= 15  # and the rest is on the 4-bit grid


@pytest.mark.parametrize(
    ("batches", "message"),
    [
        ([], "empty"),
        ([{"x": np.zeros((2, 24), np.float32)}], r"expected inputs \['input'\], got \['x'\]"),
        ([np.zeros((2, 25), np.float32)], r"expected shape \('batch', 24\), got \(2, 25\)"),
        ([np.zeros((2, 24), np.float64)], "expected dtype float32, got float64"),
        ([np.zeros((0, 24), np.float32)], "empty"),
    ],
)
def test_bad_calibration_data_is_refused_before_calibrating(
    tiny,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    batches: list,  # type: ignore[type-arg]
    message: str,
) -> None:
    src = export_onnx(tiny.model(), tiny.example_input, tmp_path / "fp32.onnx")
    with pytest.raises(CalibrationError, match=message):
        OnnxQuantizer(lambda: batches).apply(src, tmp_path / "q.onnx", Plan({"bits.fc": 8}))
    assert not (tmp_path / "q.onnx").exists()


def _activation_scales(path: Path) -> tuple[float, ...]:
    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    return tuple(
        round(float(inits[n.input[1]]), 7) for n in graph.node if n.op_type == "QuantizeLinear"
    )


def test_calibration_method_and_samples_change_the_activation_ranges(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = export_onnx(tiny.model(), tiny.example_input, tmp_path / "fp32.onnx")
    scales = {}
    for method, samples in [("minmax", 256), ("entropy", 256), ("percentile", 256), ("minmax", 8)]:
        plan = Plan(
            {
                "bits.conv2": 8,
                "bits.fc": 8,
                "method.calibration": method,
                "method.calibration_samples": samples,
            }
        )
        out = tmp_path / f"{method}{samples}.onnx"
        OnnxQuantizer(tiny.task.calibration_batches).apply(src, out, plan)
        scales[(method, samples)] = _activation_scales(out)
    minmax = scales[("minmax", 256)]
    # percentile clips the tails that min/max keeps; entropy never widens them
    assert all(p <= m for p, m in zip(scales[("percentile", 256)], minmax, strict=True))
    assert scales[("percentile", 256)] != minmax
    assert all(e <= m for e, m in zip(scales[("entropy", 256)], minmax, strict=True))
    # fewer samples see a smaller range under min/max
    assert sum(scales[("minmax", 8)]) < sum(minmax)


def test_dynamic_fp16_int4_and_emulated_layers(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = tiny.model()
    src = export_onnx(model, tiny.example_input, tmp_path / "fp32.onnx")
    x = np.random.default_rng(0).normal(size=(16, 24)).astype(np.float32)
    reference = model(torch.from_numpy(x)).detach().numpy()
    quantizer = OnnxQuantizer(tiny.task.calibration_batches, target=Target(emulated_bits=(3,)))
    cases = {  # entries, and the largest error relative to the largest logit
        "dynamic": ({"bits.conv2": 8, "bits.fc": 8, "method.quant": "dynamic"}, 0.02),
        "fp16": ({"bits.conv1": 16, "bits.conv2": 16, "bits.fc": 16}, 1e-3),
        "int4": ({"bits.fc": 4, "bits.conv2": 16}, 0.1),
        "emulated": ({"bits.conv2": 3}, 0.3),
    }
    for name, (entries, tolerance) in cases.items():
        out = tmp_path / f"{name}.onnx"
        quantizer.apply(src, out, Plan(entries))
        built = layer_precisions(onnx.load(str(out)))
        want = {"4": "int4", "8": "int8", "16": "fp16", "3": "fp32"}
        assert {k: built[k] for k in ("conv1", "conv2", "fc")} == {
            layer: want[str(entries.get(f"bits.{layer}", 32))]
            if f"bits.{layer}" in entries
            else "fp32"
            for layer in ("conv1", "conv2", "fc")
        }, name
        logits = session(out).run(None, {"input": x})[0]
        assert np.abs(logits - reference).max() < tolerance * np.abs(reference).max(), name
    ops = {n.op_type for n in onnx.load(str(tmp_path / "dynamic.onnx")).graph.node}
    assert {"ConvInteger", "MatMulInteger"} <= ops
    assert "MatMulNBits" in {n.op_type for n in onnx.load(str(tmp_path / "int4.onnx")).graph.node}
    graph = onnx.load(str(tmp_path / "emulated.onnx")).graph
    conv2 = next(n for n in graph.node if n.name == "/conv2/Conv")
    weight = next(numpy_helper.to_array(i) for i in graph.initializer if i.name == conv2.input[1])
    assert _levels_per_channel(weight) <= 7  # 3 bits: -3..3


def test_a_precision_the_target_cannot_run_is_an_invalid_plan(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = export_onnx(tiny.model(), tiny.example_input, tmp_path / "fp32.onnx")
    fp32_int8 = Target(precisions=("fp32", "int8"))
    with pytest.raises(InvalidPlan, match="cannot run"):
        OnnxQuantizer(tiny.task.calibration_batches, target=fp32_int8).apply(
            src, tmp_path / "q.onnx", Plan({"bits.fc": 16})
        )
    with pytest.raises(InvalidPlan, match="emulates"):
        OnnxQuantizer(tiny.task.calibration_batches, target=Target(emulated_bits=(2,))).apply(
            src, tmp_path / "q.onnx", Plan({"bits.conv1": 3})
        )
    assert not (tmp_path / "q.onnx").exists()


def test_quantization_aware_training_exports_qdq_int8(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plan = Plan(
        {
            "bits.conv1": 8,
            "bits.conv2": 8,
            "bits.fc": 8,
            "method.quant": "qat",
            "method.rounding": "nearest",
            "finetune.epochs": 1,
        }
    )
    candidate = compress(tiny, plan, tmp_path)
    assert candidate.notes["finetuned_epochs"] == 1  # QAT trains even without a structural change
    assert candidate.notes["fake_quantized_training"] == ["conv1", "conv2", "fc"]
    assert candidate.notes["quantization"]["int8"] == "QDQ after quantization-aware training"
    built = layer_precisions(onnx.load(str(candidate.onnx_path)))
    assert built == {"conv1": "int8", "conv2": "int8", "fc": "int8"}
    post_training = quantize_weight(tiny.model().fc.weight.detach(), 8)
    w = candidate.module.fc.weight.detach()
    assert not torch.allclose(w, post_training)  # it trained: not the teacher's rounded weights
    q = w / channel_scale(w, 8)
    assert torch.allclose(q, q.round(), atol=1e-4)  # and ends on the int8 grid


def test_emulated_bits_need_a_target_that_runs_them(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plan = Plan({"bits.conv2": 2, "finetune.epochs": 0})
    with pytest.raises(InvalidPlan, match="cannot run"):
        compress(tiny, plan, tmp_path)
    emulating = replace(tiny, target=Target(emulated_bits=(2,)))
    candidate = compress(emulating, plan, tmp_path)
    assert candidate.notes["quantization"]["precisions"] == {"conv2": "emulated2"}
    assert "fake-quantized" in candidate.notes["quantization"]["emulated"]
    assert _levels_per_channel(candidate.module.conv2.weight.detach().numpy()) <= 3


def test_bad_precision_plans_are_refused_before_any_training(
    tiny, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    def no_training(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("fine-tuning ran for a plan that cannot be built")

    monkeypatch.setattr(type(tiny.task), "fit", no_training)
    plans = {
        "no layers": {"bits.nope": 8, "prune.conv1": 0.5},
        "cannot run": {"bits.conv1": 3, "prune.conv1": 0.5},
        "method.quant": {"bits.conv1": 8, "method.quant": "fast", "prune.conv1": 0.5},
    }
    for message, entries in plans.items():
        with pytest.raises(InvalidPlan, match=message):
            compress(tiny, Plan(entries), tmp_path)


def test_four_bits_on_a_linear_layer_is_emulated_where_the_target_has_no_int4(
    tiny, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    target = Target(precisions=("fp32", "int8"), emulated_bits=(4,))
    candidate = compress(
        replace(tiny, target=target), Plan({"bits.fc": 4, "finetune.epochs": 0}), tmp_path
    )
    assert candidate.notes["quantization"]["precisions"] == {"fc": "emulated4"}
    assert layer_precisions(onnx.load(str(candidate.onnx_path)))["fc"] == "fp32"
    assert _levels_per_channel(candidate.module.fc.weight.detach().numpy()) <= 15


def test_fake_quant_training_refuses_weights_a_parent_reads_itself() -> None:
    from tests.models import ZOO

    model = ZOO["transformer"]()
    attention = next(n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention))
    training = fake_quant_training(model, {f"{attention}.out_proj": 4})
    with pytest.raises(InvalidPlan, match="reads the weights itself"):
        training.__enter__()
