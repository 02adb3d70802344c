"""Student knobs: per-stage depth and width of a derived student, or a member of a family."""

import optuna
import pytest
import torch
from torch import nn

from edgecompress import StudentFamily
from edgecompress.blocks import find_stages
from edgecompress.compress.student import StudentBuilder
from edgecompress.spaces.base import Knob
from edgecompress.spaces.student import derived_student_space, family_space
from edgecompress.tasks.mnist1d import Teacher
from edgecompress.testing import check_space
from tests.models import EXAMPLE_INPUTS, ZOO

X = torch.randn(2, 40, generator=torch.Generator().manual_seed(0))


def teacher() -> nn.Module:
    torch.manual_seed(0)
    return Teacher(channels=8, hidden=16).eval()


def identity_plan(knobs: list[Knob]) -> dict:
    return {k.name: k.param(k.identity) for k in knobs if k.identity is not None}


def test_derived_knobs_per_stage() -> None:
    stages = find_stages(teacher(), X)
    depth, width = derived_student_space(stages, min_width=0.5, width_step=0.1).knobs()
    assert (depth.name, depth.kind, depth.low, depth.high, depth.step) == (
        "student.depth.stage0",
        "int",
        1,
        5,
        1,
    )
    assert (depth.identity, depth.fastest) == (5, 1)
    assert depth.layers == stages[0].layers
    assert (width.name, width.kind, width.low, width.high, width.step) == (
        "student.width.stage0",
        "float",
        0.5,
        1.0,
        0.1,
    )
    assert (width.identity, width.fastest) == (1.0, 0.5)


def test_a_stage_with_an_excluded_layer_gets_no_knobs() -> None:
    space = derived_student_space(find_stages(teacher(), X), exclude=("features.9",))
    assert space.knobs() == []
    assert [(s.layer, s.technique) for s in space.skipped] == [("features.9", "student")]


def test_a_stage_of_one_unit_gets_a_width_knob_only() -> None:
    stages = find_stages(ZOO["residual_cnn"](), EXAMPLE_INPUTS["residual_cnn"])
    assert [k.name for k in derived_student_space(stages).knobs()] == ["student.width.stage0"]
    assert derived_student_space([]).knobs() == []


def test_derived_samples_build_valid_students_and_the_identity_rebuilds_the_teacher() -> None:
    model = teacher()
    space = derived_student_space(find_stages(model, X))
    check_space(space, samples=3)
    builder = StudentBuilder(X)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):
        student = builder.apply(model, space.sample(study.ask()))[0]
        assert student(X).shape == (2, 10)
    baseline = space.sample(optuna.trial.FixedTrial(identity_plan(space.knobs())))  # type: ignore[arg-type]
    assert dict(baseline) == {"student.depth.stage0": 5, "student.width.stage0": 1.0}
    assert torch.equal(builder.apply(model, baseline)[0](X), model(X))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"min_width": 0.33}, r"min_width=0.33 is not a whole number of steps of 0.05.*e.g. 0.35"),
        ({"min_width": 0.0}, r"min_width=0.0 must lie in \(0, 1.0\]"),
        ({"width_step": 0.0}, r"step must be > 0"),
    ],
)
def test_derived_space_settings_are_checked(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        derived_student_space([], **settings)


def shallow_teacher(*, width: float, depth: int) -> nn.Module:
    return Teacher(channels=max(1, round(8 * width)), blocks=depth, hidden=16)


FAMILY = StudentFamily(build=shallow_teacher, width=(0.25, 1.0), depth=(2, 6))


def test_family_knobs() -> None:
    kind, width, depth = family_space(FAMILY).knobs()
    assert (kind.name, kind.kind, kind.choices) == (
        "student.family",
        "choice",
        ("teacher", "family"),
    )
    assert (kind.identity, kind.fastest) == ("teacher", "family")
    assert (width.name, width.kind, width.low, width.high, width.step) == (
        "student.width",
        "float",
        0.25,
        1.0,
        0.05,
    )
    assert (width.identity, width.fastest) == (1.0, 0.25)
    assert (depth.name, depth.kind, depth.low, depth.high, depth.step) == (
        "student.depth",
        "int",
        2,
        6,
        1,
    )
    assert (depth.identity, depth.fastest) == (6, 2)


def test_family_samples_build_members_and_the_identity_rebuilds_the_teacher() -> None:
    model = teacher()
    space = family_space(FAMILY)
    check_space(space, samples=3)
    builder = StudentBuilder(X, family=FAMILY)
    fastest = {k.name: k.param(k.fastest) for k in space.knobs() if k.fastest is not None}
    smallest = builder.apply(model, space.sample(optuna.trial.FixedTrial(fastest)))[0]  # type: ignore[arg-type]
    assert [m.out_channels for m in smallest.modules() if isinstance(m, nn.Conv1d)] == [2, 2]
    baseline = space.sample(optuna.trial.FixedTrial(identity_plan(space.knobs())))  # type: ignore[arg-type]
    assert baseline["student.family"] == "teacher"
    same, report = builder.apply(model, baseline)
    assert torch.equal(same(X), model(X)) and report == {}  # the teacher, unchanged


def test_a_family_width_range_off_the_knob_grid_is_refused() -> None:
    family = StudentFamily(build=shallow_teacher, width=(0.33, 1.0), depth=(2, 6))
    with pytest.raises(ValueError, match=r"StudentFamily.width low=0.33 .* e.g. 0.35"):
        family_space(family)
