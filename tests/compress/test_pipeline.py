"""compress(): every technique of one plan applied to one model, exported and quantized."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgecompress.compress import compress, int8_layers, onnx_weight_sparsity
from edgecompress.evaluators import session
from edgecompress.plan import InvalidPlan, Plan

ALL = {
    "prune.conv1": 0.25,
    "method.prune_criterion": "taylor",
    "method.round_to": 4,
    "rank.conv2": 0.5,
    "method.decomposition": "tucker2",
    "sparsity.fc": 0.8,
    "method.sparsity": "magnitude",
    "bits.conv1": 8,
    "bits.conv2": 8,
    "bits.fc": 8,
    "finetune.epochs": 1,
}


def test_one_plan_prunes_factorizes_sparsifies_and_quantizes(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    candidate = compress(tiny, Plan(ALL), tmp_path)
    model = candidate.module
    assert model.conv1.out_channels == 12  # 16 * 0.75, a multiple of 4
    assert isinstance(model.conv2, torch.nn.Sequential)  # Tucker-2: 1x1, core, 1x1
    assert model.conv2[0].in_channels == 12 and candidate.notes["ranks"]["conv2"] is not None
    assert candidate.notes["finetuned_epochs"] == 1
    assert candidate.notes["weight_sparsity"]["fc"] == pytest.approx(0.8, abs=1e-3)
    graph = onnx.load(str(candidate.onnx_path))
    # the factors of conv2 are int8 as conv2 was; the zeros of fc survive int8
    assert int8_layers(graph) == {"conv1", "conv2.0", "conv2.1", "conv2.2", "fc"}
    fc_node = next(n for n in onnx_weight_sparsity(graph) if "/fc/" in n)
    assert onnx_weight_sparsity(graph)[fc_node] >= 0.8 - 1e-3
    logits = session(candidate.onnx_path).run(None, {"input": np.zeros((2, 24), np.float32)})[0]
    assert logits.shape == (2, 4)


def test_penalty_phases_run_for_slimming_and_l1(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plan = Plan(
        {
            "prune.conv1": 0.5,
            "method.prune_criterion": "slimming",
            "sparsity.conv2": 0.5,
            "method.sparsity": "l1",
            "method.l1_strength": 1e-3,
            "finetune.epochs": 2,
        }
    )
    notes = compress(tiny, plan, tmp_path).notes
    assert notes["slimming_epochs"] == 1 and notes["l1_epochs"] == 1
    assert notes["finetuned_epochs"] == 2
    assert notes["weight_sparsity"]["conv2"] == pytest.approx(0.5, abs=1e-3)


def test_a_plan_that_changes_nothing_does_not_fine_tune(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plan = Plan({"prune.conv1": 0.0, "rank.conv2": 1.0, "sparsity.fc": 0.0, "bits.fc": 32})
    candidate = compress(tiny, plan, tmp_path)
    assert candidate.notes["finetuned_epochs"] == 0
    x = torch.randn(3, 24)
    out = session(candidate.onnx_path).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(out, tiny.model()(x).detach().numpy(), rtol=1e-3, atol=1e-5)


def test_bad_settings_are_invalid_plans(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidPlan, match="l1_strength"):
        compress(
            tiny,
            Plan({"sparsity.fc": 0.5, "method.sparsity": "l1", "method.l1_strength": -1.0}),
            tmp_path,
        )


def test_a_model_that_outputs_nan_is_refused_with_the_reason(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """NaN logits used to score chance accuracy with nothing said (and fail int8 calibration
    with ONNX Runtime's "scale issue"): refused, in PyTorch and in ONNX Runtime."""
    from dataclasses import replace

    from edgecompress.compress import export_onnx
    from edgecompress.evaluators import onnx_accuracy
    from tests.tiny_experiment import trained_model

    def broken() -> torch.nn.Module:
        model = trained_model()
        with torch.no_grad():
            model.fc.bias[0] = float("nan")
        return model

    with pytest.raises(InvalidPlan, match="outputs NaN or inf on 64 of 64 training inputs"):
        compress(replace(tiny, model=broken), Plan({"finetune.epochs": 0}), tmp_path)
    path = export_onnx(broken(), tiny.example_input, tmp_path / "nan.onnx")
    x, y = tiny.task.arrays("val")
    with pytest.raises(InvalidPlan, match=f"NaN or inf on {len(x)} of {len(x)} inputs"):
        onnx_accuracy(path, x, y)
    assert onnx_accuracy(export_onnx(trained_model(), tiny.example_input, path), x, y) > 0.5


class _HeadFirst(torch.nn.Module):
    """The output head registered before a gate layer: the last weight layer (which the space
    leaves alone as "the output") is the gate, so the head's channels are a pruning knob."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(16, 4)  # the tiny task's 4 classes
        self.body = torch.nn.Linear(24, 16)
        self.gate = torch.nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.body(x))
        return self.head(h * torch.sigmoid(self.gate(h)))


def test_a_plan_that_narrows_the_output_is_refused_before_fine_tuning(
    tiny, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Pruning the head's channels used to score an argmax over fewer classes, with nothing
    said: refused with both shapes, before any epoch is spent."""
    from dataclasses import replace

    from edgecompress.errors import EdgeCompressError
    from edgecompress.search.engine import checked_reference, space_of
    from edgecompress.search.probe import LatencyProbe
    from edgecompress.search.sensitivity import sensitivity
    from edgecompress.tasks import ClassificationTask

    experiment = replace(tiny, model=_HeadFirst, space=None)
    reference = checked_reference(experiment)
    space = space_of(experiment, reference)
    assert "prune.head" in {k.name for k in space.knobs()}  # the space cannot tell

    def no_training(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("fine-tuned before the plan was refused")

    monkeypatch.setattr(ClassificationTask, "fit", no_training)
    with pytest.raises(InvalidPlan, match=r"shape \(1, 2\), the teacher's \(1, 4\)"):
        compress(experiment, Plan({"prune.head": 0.5, "finetune.epochs": 50}), tmp_path)
    # the sensitivity profile (`edgecompress profile`) says so too, instead of a traceback
    with pytest.raises(EdgeCompressError, match="cannot be built.*shape"):
        sensitivity(experiment, space, LatencyProbe(experiment, reference, 1.0), cache=False)
    # a plan that leaves the head alone builds
    built = compress(experiment, Plan({"prune.body": 0.5, "finetune.epochs": 0}), tmp_path)
    assert built.onnx_path.exists()
