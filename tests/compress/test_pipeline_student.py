"""compress() with a student: derived from the teacher or from the user's family, distilled
(hard labels, hints), then pruned and quantized like any other candidate."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import torch

from edgecompress import StudentFamily
from edgecompress.compress import compress, layer_precisions
from edgecompress.evaluators import session
from edgecompress.plan import Plan
from edgecompress.tasks.mnist1d import Teacher


def _small(width: float = 1.0, depth: int = 4) -> Teacher:
    torch.manual_seed(0)
    return Teacher(length=24, channels=max(2, int(8 * width)), blocks=depth, hidden=16, classes=4)


def test_a_derived_student_is_distilled_pruned_and_quantized(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    experiment = replace(tiny, model=lambda: _small().eval())
    plan = Plan(
        {
            "student.depth.stage0": 2,  # of 3 conv units after the first: keeps 3 and 6
            "student.width.stage0": 0.5,
            "prune.features.0": 0.25,
            "bits.features.0": 8,
            "bits.features.9": 8,  # dropped with its unit: not applied
            "bits.classifier.1": 4,
            "method.quant": "qat",
            "finetune.kd_mode": "hard",
            "finetune.hint_weight": 0.1,
            "finetune.epochs": 1,
        }
    )
    candidate = compress(experiment, plan, tmp_path)
    notes = candidate.notes
    assert notes["student"] == "derived" and notes["dropped_layers"] == ["features.9"]
    assert notes["plan_entries_not_applied"] == ["bits.features.9"]
    assert notes["hint_pairs"] and notes["finetuned_epochs"] == 1
    student = candidate.module
    assert isinstance(student.features[9], torch.nn.Identity)
    assert student.features[3].out_channels == 4  # width 0.5 of 8
    assert student.features[0].out_channels == 6  # pruned 25%
    built = layer_precisions(onnx.load(str(candidate.onnx_path)))
    assert built["features.0"] == "int8" and built["classifier.1"] == "int4"
    assert built["features.3"] == "fp32"
    assert candidate.plan == plan  # the trial's plan is recorded as it was asked
    logits = session(candidate.onnx_path).run(None, {"input": np.zeros((2, 24), np.float32)})[0]
    assert logits.shape == (2, 4)


def test_a_family_student_is_trained_from_the_teacher(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    family = StudentFamily(build=_small, width=(0.25, 1.0), depth=(1, 4))
    experiment = replace(tiny, model=lambda: _small().eval(), student=family)
    plan = Plan(
        {
            "student.family": "family",
            "student.width": 0.5,
            "student.depth": 2,
            "bits.features.0": 8,
            "bits.features.9": 8,  # the two-block student has no such layer
            "finetune.epochs": 1,
        }
    )
    candidate = compress(experiment, plan, tmp_path)
    assert candidate.notes["student"] == "family"
    assert candidate.notes["plan_entries_not_applied"] == ["bits.features.9"]
    assert candidate.module.features[0].out_channels == 4
    assert layer_precisions(onnx.load(str(candidate.onnx_path)))["features.0"] == "int8"
