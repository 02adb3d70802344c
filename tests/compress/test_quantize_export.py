from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edgecompress.compress import OnnxQuantizer, export_onnx, int8_layers, layer_nodes
from edgecompress.evaluators import session
from edgecompress.plan import InvalidPlan, Plan


def _fp32(tiny, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    return export_onnx(tiny.model(), tiny.example_input, tmp_path / "fp32.onnx")


def test_export_matches_pytorch_and_has_dynamic_batch(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = tiny.model()
    path = _fp32(tiny, tmp_path)
    x = torch.randn(9, 24)
    out = session(path).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(out, model(x).detach().numpy(), rtol=1e-3, atol=1e-5)
    assert set(layer_nodes(onnx.load(str(path)))) == {"conv1", "conv2", "fc"}


def test_fp32_layers_stay_fp32_in_the_graph(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    quantizer = OnnxQuantizer(tiny.task.calibration_batches)
    plan = Plan({"bits.conv1": 8, "bits.conv2": 32, "bits.fc": 8})
    out = tmp_path / "q.onnx"
    report = quantizer.apply(_fp32(tiny, tmp_path), out, plan)
    assert int8_layers(onnx.load(str(out))) == {"conv1", "fc"}
    wanted = {"conv1": "int8", "conv2": "fp32", "fc": "int8"}
    assert report["quantization"]["precisions"] == wanted  # what it built, reported
    logits = session(out).run(None, {"input": np.zeros((3, 24), np.float32)})[0]
    assert logits.shape == (3, 4)


def test_layers_the_plan_does_not_name_stay_fp32(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    quantizer = OnnxQuantizer(tiny.task.calibration_batches)
    out = tmp_path / "q.onnx"
    quantizer.apply(_fp32(tiny, tmp_path), out, Plan({"bits.conv2": 8}))
    assert int8_layers(onnx.load(str(out))) == {"conv2"}


def test_all_int8_and_all_fp32(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fp32 = _fp32(tiny, tmp_path)
    quantizer = OnnxQuantizer(tiny.task.calibration_batches)
    q8 = tmp_path / "q8.onnx"
    quantizer.apply(fp32, q8, Plan({f"bits.{n}": 8 for n in ("conv1", "conv2", "fc")}))
    q32 = tmp_path / "q32.onnx"
    quantizer.apply(fp32, q32, Plan({f"bits.{n}": 32 for n in ("conv1", "conv2", "fc")}))
    assert int8_layers(onnx.load(str(q8))) == {"conv1", "conv2", "fc"}
    assert int8_layers(onnx.load(str(q32))) == set()
    graph = onnx.load(str(q8)).graph
    dtypes = {i.name: i.data_type for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm"):
            dq = producers[node.input[1]]
            assert dq.op_type == "DequantizeLinear"
            assert dtypes[dq.input[0]] == onnx.TensorProto.INT8, node.name
    assert q8.stat().st_size < q32.stat().st_size


def test_unsupported_bits_and_unknown_layers_are_invalid_plans(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fp32 = _fp32(tiny, tmp_path)
    quantizer = OnnxQuantizer(tiny.task.calibration_batches)
    with pytest.raises(InvalidPlan, match="must be one of"):
        quantizer.apply(fp32, tmp_path / "x.onnx", Plan({"bits.conv1": 12}))
    with pytest.raises(InvalidPlan, match="no ONNX node"):
        quantizer.apply(fp32, tmp_path / "x.onnx", Plan({"bits.conv7": 8}))


def test_layers_with_equal_weights_keep_their_own_and_are_quantized(tmp_path: Path) -> None:
    """The exporter stores equal tensors once and feeds the others through an Identity; ONNX
    Runtime's quantizer then left such a layer fp32 against the plan (a ResNet's low-rank factors
    of one channel came out equal, and its most compressed plan could not be built)."""
    model = torch.nn.Sequential(
        torch.nn.Conv1d(4, 4, 1, bias=False), torch.nn.ReLU(), torch.nn.Conv1d(4, 4, 1, bias=False)
    ).eval()
    with torch.no_grad():
        model[2].weight.copy_(model[0].weight)
    x = torch.randn(1, 4, 6)
    path = export_onnx(model, x, tmp_path / "fp32.onnx")
    graph = onnx.load(str(path)).graph
    initializers = {i.name for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == 2 and all(n.input[1] in initializers for n in convs)
    assert not any(n.op_type == "Identity" for n in graph.node)
    np.testing.assert_allclose(
        session(path).run(None, {"input": x.numpy()})[0], model(x).detach().numpy(), atol=1e-6
    )
    batches = lambda: iter([x.numpy() for _ in range(4)])  # noqa: E731
    out = tmp_path / "q.onnx"
    OnnxQuantizer(batches).apply(path, out, Plan({"bits.0": 8, "bits.2": 8}))
    assert int8_layers(onnx.load(str(out))) == {"0", "2"}


def test_int8_weights_use_7_bits_where_the_cpu_would_saturate_8(
    tiny, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """On an x86 CPU without VNNI, ONNX Runtime's uint8 x int8 kernels add pairs of products
    in 16 bits: full 8-bit weights saturate them, so the local CPU's int8 weights use 7 bits
    (and the report says so); a CPU with VNNI keeps 8."""
    from edgecompress.compress.quantize import onnx_quantizer
    from edgecompress.targets.device import int8_pairs_saturate

    assert int8_pairs_saturate(["sse4_2", "avx2", "fma"])
    assert not int8_pairs_saturate(["avx2", "avx512f", "avx512_vnni"])
    assert not int8_pairs_saturate(["neon", "asimd"])
    fp32, plan = _fp32(tiny, tmp_path), Plan({"bits.fc": 8, "method.quant": "dynamic"})
    largest = {}
    for saturates in (True, False):
        monkeypatch.setattr(onnx_quantizer, "int8_pairs_saturate", lambda s=saturates: s)
        out = tmp_path / f"{saturates}.onnx"
        report = OnnxQuantizer(tiny.task.calibration_batches).apply(fp32, out, plan)
        assert ("int8_weights" in report["quantization"]) == saturates
        weights = [
            numpy_helper.to_array(i)
            for i in onnx.load(str(out)).graph.initializer
            if numpy_helper.to_array(i).dtype == np.int8
        ]
        largest[saturates] = max(int(np.abs(w).max()) for w in weights)
    assert largest[True] <= 64 < largest[False]  # 7-bit weights against full 8-bit ones
    # weights rounded onto their 8-bit grid in training keep it (the file is what was trained)
    monkeypatch.setattr(onnx_quantizer, "int8_pairs_saturate", lambda: True)
    rounded = Plan({"bits.fc": 8, "method.rounding": "stochastic"})
    report = OnnxQuantizer(tiny.task.calibration_batches).apply(fp32, tmp_path / "r.onnx", rounded)
    assert "8-bit grid they were rounded onto" in report["quantization"]["int8_weights"]
