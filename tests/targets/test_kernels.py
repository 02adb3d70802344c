"""A model as the runtime runs it: kernels of the optimized graph, and their micro-models."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgecompress.compress import compress
from edgecompress.plan import Plan
from edgecompress.targets.kernels import kernels
from edgecompress.targets.runner import session

pytestmark = pytest.mark.usefixtures("one_thread")


def _built(tiny, tmp_path: Path, entries: dict) -> bytes:  # type: ignore[no-untyped-def, type-arg]
    plan = Plan({"finetune.epochs": 0, "method.calibration_samples": 16, **entries})
    return Path(compress(tiny, plan, tmp_path).onnx_path).read_bytes()


def _feed(tiny) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    x = np.random.default_rng(0).standard_normal((1, 24)).astype(np.float32)
    return {"input": x}


@pytest.mark.parametrize(
    ("entries", "ops"),
    [
        ({}, {"com.microsoft:FusedConv", "Gemm"}),
        (
            {"bits.conv2": 8, "bits.fc": 8, "method.quant": "static"},
            {"QuantizeLinear", "com.microsoft:QLinearConv", "DequantizeLinear"},
        ),
        ({"bits.conv2": 8, "method.quant": "dynamic"}, {"ConvInteger", "DynamicQuantizeLinear"}),
        ({"bits.fc": 4}, {"com.microsoft:MatMulNBits"}),
    ],
)
def test_each_kernel_alone_computes_what_it_computes_in_the_whole_graph(
    tiny,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    entries: dict,  # type: ignore[type-arg]
    ops: set[str],
) -> None:
    found = kernels(_built(tiny, tmp_path, entries), _feed(tiny))
    names = {k.layer.op for k in found}
    assert ops <= names, names
    for kernel in found:
        micro = session(kernel.micro(), 1)
        feed = {i.name: kernel.values[i.name] for i in micro.get_inputs()}
        got = micro.run(None, feed)
        for name, value in zip([o.name for o in micro.get_outputs()], got, strict=True):
            expected = kernel.values[name]
            assert value.shape == expected.shape and value.dtype == expected.dtype
            np.testing.assert_allclose(
                value.astype(np.float64), expected.astype(np.float64), rtol=1e-5, atol=1e-5
            )
        null = session(kernel.null(), 1)
        outputs = [o.name for o in micro.get_outputs()]
        assert [o.shape for o in null.get_outputs()] == [o.shape for o in micro.get_outputs()]
        assert {i.name for i in null.get_inputs()} == set(feed) | set(outputs)
        assert not onnx.load_from_string(kernel.null()).graph.node


def test_keys_carry_widths_and_work_of_the_layer(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    found = kernels(_built(tiny, tmp_path, {}), _feed(tiny))
    convs = [k.layer for k in found if k.layer.op == "com.microsoft:FusedConv"]
    # conv1 (1 -> 16) and conv2 (16 -> 16), kernel 3, over 24 positions, batch norm folded
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 16), (16, 16)]
    assert all(c.kernel == "3" and c.spatial == "24" and c.fused == "Relu" for c in convs)
    assert convs[1].work == 16 * 24 * 16 * 3
    gemm = next(k.layer for k in found if k.layer.op == "Gemm")
    assert (gemm.in_channels, gemm.out_channels, gemm.work) == (16 * 24, 4, 4 * 16 * 24)


def test_the_batch_of_the_feed_is_the_batch_of_the_keys(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = _built(tiny, tmp_path, {})
    one = kernels(model, _feed(tiny))
    four = kernels(model, {"input": np.zeros((4, 24), np.float32)})
    assert [k.layer.work * 4 for k in one] == pytest.approx([k.layer.work for k in four])
    proto = onnx.load_from_string(four[1].micro())
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    assert ort.InferenceSession(four[1].micro(), providers=["CPUExecutionProvider"])
