"""Students derived from the teacher (fewer units, narrower units) or built from a family."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgecompress import StudentFamily
from edgecompress.compress.onnx_export import export_onnx
from edgecompress.compress.student import StudentBuilder, drop_missing, kept_units
from edgecompress.plan import InvalidPlan, Plan
from edgecompress.tasks.mnist1d import Teacher
from edgecompress.testing import check_compressor
from tests.models import EXAMPLE_INPUTS, ZOO

X = torch.randn(2, 40, generator=torch.Generator().manual_seed(0))
CONVS = ["features.3", "features.6", "features.9", "features.12", "features.15"]


def teacher() -> nn.Module:
    torch.manual_seed(0)
    return Teacher(channels=8, hidden=16).eval()


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def same_weights(a: nn.Module, b: nn.Module, names: list[str]) -> bool:
    modules_a, modules_b = dict(a.named_modules()), dict(b.named_modules())
    return all(torch.equal(modules_a[n].weight, modules_b[n].weight) for n in names)


@pytest.mark.parametrize(
    ("units", "depth", "kept"),
    [(5, 1, [0]), (5, 2, [0, 2]), (5, 3, [0, 1, 3]), (6, 3, [0, 2, 4]), (4, 4, [0, 1, 2, 3])],
)
def test_kept_units_are_evenly_spaced_and_include_the_first(
    units: int, depth: int, kept: list[int]
) -> None:
    assert kept_units(units, depth) == kept


def test_depth_replaces_dropped_units_by_identities_and_keeps_every_other_name() -> None:
    model = teacher()
    builder = StudentBuilder(X)
    student, report = builder.apply(model, Plan({"student.depth.stage0": 2}))
    assert report == {
        "student": "derived",
        "dropped_layers": ["features.6", "features.12", "features.15"],
    }
    assert all(isinstance(student.features[i], nn.Identity) for i in (6, 7, 8, 12, 13, 17))
    kept = ["features.0", "features.3", "features.9", "classifier.1", "classifier.4"]
    assert same_weights(student, model, kept)  # the teacher's weights initialize the student
    assert student(X).shape == model(X).shape
    assert params(student) < params(model)


@pytest.mark.parametrize(
    ("model", "x", "plan"),
    [
        (teacher(), X, {"student.depth.stage0": 3, "student.width.stage0": 0.5}),
        (ZOO["transformer"](), EXAMPLE_INPUTS["transformer"], {"student.depth.stage0": 1}),
        (ZOO["residual_cnn"](), EXAMPLE_INPUTS["residual_cnn"], {"student.width.stage0": 0.25}),
    ],
    ids=["mnist1d", "transformer", "residual_cnn"],
)
def test_a_derived_student_is_smaller_leaves_the_teacher_and_exports_to_onnx(
    model: nn.Module, x: torch.Tensor, plan: dict, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    builder = StudentBuilder(x)
    invalid = Plan({"student.depth.stage0": 9})
    student = check_compressor(builder, model, x, Plan(plan), invalid_plan=invalid)
    assert params(student) < params(model)
    assert student(x).shape == model(x).shape
    path = export_onnx(student, x, tmp_path / "student.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        expected = student(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_width_keeps_the_asked_share_of_each_kept_units_channels() -> None:
    student = StudentBuilder(X).apply(
        teacher(), Plan({"student.depth.stage0": 5, "student.width.stage0": 0.5})
    )[0]
    assert [student.get_submodule(n).out_channels for n in CONVS] == [4] * 5
    assert student.features[4].num_features == 4
    assert student.features[0].out_channels == 8  # the stem is not in the stage


@pytest.mark.parametrize(
    "plan",
    [{}, {"student.depth.stage0": 5, "student.width.stage0": 1.0}, {"prune.features.3": 0.5}],
)
def test_the_identity_plan_gives_an_equal_model(plan: dict) -> None:
    model = teacher()
    builder = StudentBuilder(X)
    student, report = builder.apply(model, Plan(plan))
    assert student is not model and report == {}  # no student: nothing to report
    assert torch.equal(student(X), model(X))
    assert student.state_dict().keys() == model.state_dict().keys()


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ({"student.depth.stage7": 1}, r"no stages \['stage7'\].*'stage0': 5"),
        ({"student.width.stage7": 0.5}, r"no stages \['stage7'\]"),
        ({"student.depth.stage0": 6}, r"student.depth.stage0 = 6: .* choose 1..5"),
        ({"student.depth.stage0": 0}, r"student.depth.stage0 must be an integer >= 1"),
        ({"student.depth.stage0": 2.5}, r"student.depth.stage0 must be an integer"),
        ({"student.depth.stage0": "two"}, r"student.depth.stage0 must be an integer"),
        ({"student.width.stage0": 0.0}, r"student.width.stage0 must be a number in \(0, 1\]"),
        ({"student.width.stage0": 1.5}, r"student.width.stage0 must be a number in \(0, 1\]"),
        ({"student.width.stage0": "half"}, r"student.width.stage0 must be a number"),
        ({"student.width.stage0": True}, r"student.width.stage0 must be a number"),
        ({"student.layers": 2}, r"unknown entries \['student.layers'\]"),
        ({"student.family": "tiny"}, r"student.family 'tiny': choose one of"),
        ({"student.family": "family"}, r"needs a student family: .*StudentFamily"),
        ({"student.width": 0.5}, r"add student.family = 'family'"),
    ],
)
def test_bad_entries_are_invalid_plans_naming_the_entry(plan: dict, message: str) -> None:
    with pytest.raises(InvalidPlan, match=message):
        StudentBuilder(X).apply(teacher(), Plan(plan))[0]


def shallow_teacher(*, width: float, depth: int) -> nn.Module:
    """The teacher's own class, narrower and shallower."""
    return Teacher(channels=max(1, round(8 * width)), blocks=depth, hidden=16)


FAMILY = StudentFamily(build=shallow_teacher, width=(0.25, 1.0), depth=(1, 6))


def test_a_family_builds_the_member_asked_for_deterministically_under_a_seed() -> None:
    plan = Plan({"student.family": "family", "student.width": 0.5, "student.depth": 2})
    builder = StudentBuilder(X, family=FAMILY, seed=3)
    model = teacher()  # seeds and draws from the global generator itself: before the snapshot
    state = torch.get_rng_state()
    student, report = builder.apply(model, plan)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    convs = [m for m in student.modules() if isinstance(m, nn.Conv1d)]
    assert [c.out_channels for c in convs] == [4, 4]
    assert report == {"student": "family", "dropped_layers": CONVS[1:]}
    again = StudentBuilder(X, family=FAMILY, seed=3).apply(teacher(), plan)[0]
    other = StudentBuilder(X, family=FAMILY, seed=4).apply(teacher(), plan)[0]
    assert torch.equal(again(X), student(X)) and not torch.equal(other(X), student(X))


def test_a_family_plan_without_width_and_depth_builds_the_largest_member() -> None:
    student = StudentBuilder(X, family=FAMILY).apply(teacher(), Plan({"student.family": "family"}))[
        0
    ]
    assert sum(isinstance(m, nn.Conv1d) for m in student.modules()) == 6


def test_student_family_teacher_ignores_the_members_width_and_depth() -> None:
    plan = Plan({"student.family": "teacher", "student.width": 0.25, "student.depth": 1})
    model = teacher()
    assert torch.equal(StudentBuilder(X, family=FAMILY).apply(model, plan)[0](X), model(X))


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"student.width": 0.2}, r"student.width must be a number in \[0.25, 1.0\], got 0.2"),
        ({"student.width": "wide"}, r"student.width must be a number"),
        ({"student.depth": 7}, r"student.depth must be an integer >= 1 and <= 6, got 7"),
        ({"student.depth": 0}, r"student.depth must be an integer >= 1 and <= 6, got 0"),
    ],
)
def test_a_family_member_outside_the_ranges_is_an_invalid_plan(entries: dict, message: str) -> None:
    plan = Plan({"student.family": "family", **entries})
    with pytest.raises(InvalidPlan, match=message):
        StudentBuilder(X, family=FAMILY).apply(teacher(), plan)[0]


def test_drop_missing_removes_exactly_the_entries_of_layers_the_student_lost() -> None:
    student = StudentBuilder(X).apply(teacher(), Plan({"student.depth.stage0": 3}))[0]
    plan = Plan(
        {
            "prune.features.3": 0.5,
            "prune.features.9": 0.5,  # dropped (kept units: 0, 1, 3 of 5)
            "sparsity.features.15": 0.5,  # dropped
            "rank.features.6": 0.5,
            "bits.features.9": 8,  # dropped
            "bits.classifier.4": 8,
            "method.round_to": 4,
            "student.depth.stage0": 3,
        }
    )
    kept, dropped = drop_missing(plan, student)
    assert dropped == ["bits.features.9", "prune.features.9", "sparsity.features.15"]
    assert set(kept) == set(plan) - set(dropped)
    assert drop_missing(kept, student) == (kept, [])


def test_drop_missing_keeps_containers_and_refuses_look_alikes_of_a_family_member() -> None:
    class Member(nn.Module):  # shares names with the teacher, not kinds
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU())
            self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(160, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.features(x.unsqueeze(1)))

    plan = Plan(
        {
            "bits.features": 8,  # a container: its layers follow it
            "bits.features.0": 8,
            "prune.features.1": 0.5,  # a ReLU in the member, a BatchNorm in the teacher
            "prune.classifier.1": 0.5,  # the member's output layer
        }
    )
    kept, dropped = drop_missing(plan, Member(), teacher=teacher())
    assert dropped == ["prune.classifier.1", "prune.features.1"]
    assert set(kept) == {"bits.features", "bits.features.0"}
