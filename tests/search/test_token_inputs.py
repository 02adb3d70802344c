"""A model whose input is integer token ids: searched, measured, quantized and exported in its
own dtype (the reference measurement fed it floats and crashed, issue 14)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgecompress import export, load_experiment, open_result, search
from edgecompress.compress.quantize.calibration import CalibrationError, calibration_batches
from edgecompress.evaluators import onnx_accuracy, session

TOKENS = f"{Path(__file__).parent.parent / 'token_experiment.py'}:experiment"


def test_a_token_id_model_is_searched_and_exported_with_int64_input(workdir: Path) -> None:
    experiment = load_experiment(TOKENS)
    result = search(
        experiment, trials=4, speedup=0.5, storage="sqlite:///t.db", progress=False, strategy="tpe"
    )
    assert len(result.trials) == 4
    assert {"teacher", "int8"} <= set(result.trials["baseline"])
    assert (result.trials["accuracy"] > 0.9).all()  # the class token is found in every plan
    int8 = int(result.trials.set_index("baseline").loc["int8", "trial"])
    out = workdir / "out" / "m.onnx"
    export(experiment, open_result("tokens", "sqlite:///t.db"), out, trial=int8)
    graph = onnx.load(out).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert any(n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear") for n in graph.node)
    x, y = experiment.task.arrays("val")
    assert x.dtype == np.int64
    assert onnx_accuracy(out, x, y) == result.trials.set_index("trial").loc[int8, "accuracy"]
    ids = np.zeros((3, 12), np.int64)
    assert session(out).run(None, {graph.input[0].name: ids})[0].shape == (3, 3)


def test_calibration_batches_must_have_the_dtype_of_the_input(tmp_path: Path) -> None:
    from edgecompress.compress import export_onnx

    experiment = load_experiment(TOKENS)
    model = onnx.load(
        export_onnx(experiment.model(), experiment.example_input, tmp_path / "m.onnx")
    )
    ids = np.ones((4, 12), np.int64)
    assert calibration_batches(lambda: [ids], model, 4)[0]["input"].dtype == np.int64
    with pytest.raises(CalibrationError, match="expected dtype int64, got float32"):
        calibration_batches(lambda: [ids.astype(np.float32)], model, 4)


def test_inputs_of_the_wrong_dtype_are_refused_before_any_work(workdir: Path) -> None:
    from dataclasses import replace

    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from edgecompress import EdgeCompressError
    from tests.token_experiment import make_data

    experiment = load_experiment(TOKENS)
    floats = replace(experiment, example_input=torch.zeros(1, 12))
    with pytest.raises(EdgeCompressError, match=r"rejects the example input \(float32 \(1, 12\)\)"):
        search(floats, trials=3, speedup=0.5, storage="sqlite:///t.db", progress=False)
    x, y = make_data(40, 3)
    val = DataLoader(TensorDataset(x.float(), y), batch_size=8)
    mixed = replace(experiment, task=replace(experiment.task, val=val))
    with pytest.raises(
        EdgeCompressError,
        match="input 'input' is torch.float32, the example input's is torch.int64",
    ):
        search(mixed, trials=3, speedup=0.5, storage="sqlite:///t.db", progress=False)
    narrow = DataLoader(TensorDataset(x.int(), y), batch_size=8)  # int32 ids, an int64 example
    other = replace(experiment, task=replace(experiment.task, val=narrow))
    with pytest.raises(
        EdgeCompressError, match="input 'input' is torch.int32, the example input's is torch.int64"
    ):
        search(other, trials=3, speedup=0.5, storage="sqlite:///t.db", progress=False)
    assert not (workdir / "t.db").exists()  # nothing was created
