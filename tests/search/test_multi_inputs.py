"""Models with several inputs (issue 14): keyword inputs as a tokenizer gives them (ids, mask,
and an input the model ignores) and positional inputs (a signal and its metadata) are searched,
measured, quantized with calibration on every input, and exported under their own names."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from edgecompress import EdgeCompressError, export, load_experiment, open_result, search
from edgecompress.evaluators import input_for, onnx_accuracy
from edgecompress.inputs import InputSpec, call, repeat_first, rows, take
from tests.multi_input_experiment import LENGTH, Rows, masked_data, pair_data

HERE = Path(__file__).parent.parent / "multi_input_experiment.py"
MASKED, PAIR = f"{HERE}:masked", f"{HERE}:pair"


def _graph_inputs(path: Path) -> dict[str, int]:
    graph = onnx.load(path).graph
    return {i.name: i.type.tensor_type.elem_type for i in graph.input}


def test_keyword_inputs_are_searched_and_exported_under_their_names(workdir: Path) -> None:
    experiment = load_experiment(MASKED)
    result = search(
        experiment, trials=3, speedup=0.5, storage="sqlite:///m.db", progress=False, strategy="tpe"
    )
    assert len(result.trials) == 3
    assert {"teacher", "int8"} <= set(result.trials["baseline"])
    # the padding holds class-like tokens: only a model fed the mask is right
    baselines = result.trials.set_index("baseline").loc[["teacher", "int8"], "accuracy"]
    assert (baselines > 0.9).all()
    int8 = int(result.trials.set_index("baseline").loc["int8", "trial"])
    out = workdir / "out" / "m.onnx"
    export(experiment, open_result("masked", "sqlite:///m.db"), out, trial=int8)
    # the ignored token_type_ids is not an input of the graph; the others keep their names
    assert _graph_inputs(out) == {
        "input_ids": onnx.TensorProto.INT64,
        "attention_mask": onnx.TensorProto.INT64,
    }
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["inputs"] == ["input_ids", "attention_mask"]
    x, y = experiment.task.arrays("val")
    assert set(x) == {"input_ids", "attention_mask", "token_type_ids"}
    recorded = result.trials.set_index("trial").loc[int8, "accuracy"]
    assert onnx_accuracy(out, experiment.inputs.named(x), y) == recorded
    unmasked = dict(experiment.inputs.named(x), attention_mask=np.ones((len(y), LENGTH), np.int64))
    assert onnx_accuracy(out, unmasked, y) < recorded - 0.3  # the mask reaches the graph


def test_positional_inputs_take_the_names_of_forward_and_calibrate_on_both(workdir: Path) -> None:
    experiment = load_experiment(PAIR)
    assert experiment.inputs.names == ("signal", "meta")
    result = search(
        experiment, trials=2, speedup=0.5, storage="sqlite:///p.db", progress=False, strategy="tpe"
    )
    assert len(result.trials) == 2  # the baselines: the teacher and int8
    int8 = int(result.trials.set_index("baseline").loc["int8", "trial"])
    out = workdir / "p.onnx"
    export(experiment, open_result("pair", "sqlite:///p.db"), out, trial=int8)
    assert set(_graph_inputs(out)) == {"signal", "meta"}
    graph = onnx.load(out).graph
    # static int8: both inputs were calibrated (each is quantized on entry)
    quantized = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    assert {"signal", "meta"} <= quantized
    x, y = experiment.task.arrays("test")
    assert isinstance(x, tuple) and len(x) == 2
    recorded = result.trials.set_index("trial").loc[int8, "test_accuracy"]
    assert onnx_accuracy(out, experiment.inputs.named(x), y) == recorded > 0.9


def test_the_sensitivity_profile_runs_the_model_on_its_keyword_inputs() -> None:
    """Damage is measured in PyTorch (pruned, batch norms re-estimated) and in ONNX Runtime
    (each precision, deployed) on the dict inputs; latency from a fake probe, nothing timed."""
    from edgecompress.search.engine import checked_reference, space_of
    from edgecompress.search.sensitivity import sensitivity
    from edgecompress.spaces import AutoSpace
    from tests.search.test_sensitivity import FakeProbe

    experiment = replace(
        load_experiment(MASKED), space=AutoSpace(techniques=("prune", "bits"), round_to=(1,))
    )
    reference = checked_reference(experiment)
    space = space_of(experiment, reference)
    profile = sensitivity(experiment, space, FakeProbe(experiment, reference, 1.0), cache=False)
    damage = {p.value: p.damage for p in profile.prune["prune.fc1"]}
    assert 0 <= damage[0.25] < damage[0.9]  # pruning more of the hidden width moves more
    assert profile.bits and all(
        np.isfinite(p.damage) and p.damage >= 0 for ps in profile.bits.values() for p in ps
    )


def test_the_latency_feed_has_every_input_at_the_target_batch(tiny) -> None:  # type: ignore[no-untyped-def]
    experiment = load_experiment(MASKED)
    batched = replace(experiment, target=replace(experiment.target, batch_size=3))
    feed = input_for(batched)
    assert {k: (v.shape, v.dtype) for k, v in feed.items()} == {
        name: ((3, LENGTH), np.dtype(np.int64))
        for name in ("input_ids", "attention_mask", "token_type_ids")
    }
    signal, meta = input_for(load_experiment(PAIR)).values()
    assert signal.shape == (1, 1, 24) and signal.dtype == np.float32 and meta.shape == (1, 4)
    # one tensor keeps its one name
    assert list(input_for(tiny)) == ["input"]


def test_input_spec_reads_names_from_forward_and_orders_keywords_like_it() -> None:
    class Star(nn.Module):
        def forward(self, first: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
            return first

    x = torch.zeros(2, 3)
    assert InputSpec.of(Star(), (x, x, x)).names == ("first", "input_1", "input_2")

    class Keywords(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
            return a + b

    spec = InputSpec.of(Keywords(), {"z": x, "b": x, "a": x})
    assert spec.names == ("a", "b", "z")  # the exporter's order: forward's, then the rest
    assert call(Keywords(), {"a": x, "b": x + 1}).sum() == 6
    assert rows(take({"a": np.zeros((5, 2))}, 1, 4)) == 3
    assert repeat_first((x.double(), x.long()), 4)[0].dtype == np.float32  # fed as float32
    with pytest.raises(EdgeCompressError, match="input 'b' is not a tensor"):
        InputSpec.of(Keywords(), {"a": x, "b": [1, 2]})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda x: {k: v for k, v in x.items() if k != "attention_mask"},
            r"missing \['attention_mask'\]",
        ),
        (
            lambda x: dict(x, attention_mask=x["attention_mask"].float()),
            r"input 'attention_mask' is torch.float32, the example input's is torch.int64",
        ),
        (
            lambda x: {k: v[:, :10] for k, v in x.items()},
            r"input 'input_ids' has shape \(\d+, 10\), the example input's \(1, 12\)",
        ),
        (lambda x: tuple(x.values()), r"the inputs are a tuple .* the example input a dict"),
    ],
)
def test_validation_inputs_that_do_not_match_are_refused_before_any_work(
    workdir: Path,
    change,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    experiment = load_experiment(MASKED)
    x, y = masked_data(64, 5)
    val = DataLoader(Rows(change(x), y), batch_size=16)
    broken = replace(experiment, task=replace(experiment.task, val=val))
    with pytest.raises(EdgeCompressError, match=message):
        search(broken, trials=3, speedup=0.5, storage="sqlite:///b.db", progress=False)
    assert not (workdir / "b.db").exists()  # nothing was created


def test_an_example_the_model_rejects_names_each_input(workdir: Path) -> None:
    experiment = load_experiment(PAIR)
    swapped = replace(experiment, example_input=tuple(reversed(experiment.example_input)))
    with pytest.raises(
        EdgeCompressError,
        match=r"rejects the example input \(\[0\] float32 \(1, 4\), \[1\] float32 \(1, 1, 24\)\)",
    ):
        search(swapped, trials=3, speedup=0.5, storage="sqlite:///s.db", progress=False)
    x, _ = pair_data(4, 0)
    model = experiment.model()
    with torch.no_grad():
        assert call(model, x).shape == (4, 3)  # the right order runs
