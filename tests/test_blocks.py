"""Stages a student may shorten, found by introspection; the student family a user supplies."""

import pytest
import torch
from torch import nn

from edgecompress import EdgeCompressError, StudentFamily
from edgecompress.blocks import PassThrough, find_stages
from edgecompress.compress.student import StudentBuilder
from edgecompress.plan import Plan
from edgecompress.tasks.mnist1d import Teacher
from tests.models import EXAMPLE_INPUTS, ZOO
from tests.tiny_experiment import CLASSES, LENGTH, TinyNet, build


def small_teacher() -> nn.Module:
    torch.manual_seed(0)
    return Teacher(channels=8, hidden=16).eval()


def test_the_mnist1d_teacher_has_one_stage_of_five_conv_bn_relu_units() -> None:
    (stage,) = find_stages(small_teacher(), torch.randn(2, 40))
    assert (stage.name, stage.container, stage.channels) == ("stage0", "features", 8)
    assert stage.shape == (2, 8, 40)
    # the first conv maps 1 -> 8 channels: not droppable
    assert [u.names for u in stage.units] == [
        (f"features.{i}", f"features.{i + 1}", f"features.{i + 2}") for i in (3, 6, 9, 12, 15)
    ]
    assert [u.indices for u in stage.units][0] == (3, 4, 5)
    assert stage.layers == ("features.3", "features.6", "features.9", "features.12", "features.15")
    assert [u.root for u in stage.units] == list(stage.layers)


@pytest.mark.parametrize(
    ("name", "units"),
    [
        ("plain_cnn", []),  # no container
        ("mlp", []),
        ("residual_cnn", [("blocks.0",)]),  # blocks.1 changes the shape (stride 2, 32 channels)
        ("depthwise", [("blocks.0",)]),
        ("transformer", [("blocks.0",), ("blocks.1",)]),  # an nn.ModuleList
    ],
)
def test_zoo_stages(name: str, units: list[tuple[str, ...]]) -> None:
    stages = find_stages(ZOO[name](), EXAMPLE_INPUTS[name])
    assert [u.names for s in stages for u in s.units] == units
    assert [s.name for s in stages] == (["stage0"] if units else [])


def test_the_transformer_stage_narrows_the_feed_forward_not_the_attention() -> None:
    (stage,) = find_stages(ZOO["transformer"](), EXAMPLE_INPUTS["transformer"])
    assert stage.units[0].layers == ("blocks.0.attn.out_proj", "blocks.0.fc1", "blocks.0.fc2")
    assert stage.units[0].root == "blocks.0.fc1"
    assert stage.channels == 32


class Reused(nn.Module):
    """The same block runs twice: it cannot be dropped. A block called with more arguments
    than its input (a Hugging Face encoder layer takes the attention mask) can be: the stand-in
    returns its input and ignores the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
        self.gated = nn.ModuleList([Gate(), Gate()])
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.body(x))
        for gate in self.gated:
            h = gate(h, x.sign(), scale=2.0)
        return self.head(h)


class Gate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, sign: torch.Tensor, *, scale: float) -> torch.Tensor:
        return self.fc(x) * sign * scale


def test_reused_blocks_are_not_droppable_and_blocks_called_with_more_arguments_are() -> None:
    x = torch.randn(2, 8)
    (stage,) = find_stages(Reused(), x)  # body runs twice: not a stage
    assert [u.names for u in stage.units] == [("gated.0",), ("gated.1",)]
    student = StudentBuilder(x).apply(Reused(), Plan({"student.depth.stage0": 1}))[0]
    assert isinstance(student.gated[1], PassThrough)
    assert student(x).shape == (2, 2)


class AddedTo(nn.Module):
    """``x = x + f(x)`` over a ModuleList: an identity for ``f`` would double ``x``."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return self.head(x)


class Chained(AddedTo):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def test_module_list_units_count_only_when_each_takes_the_previous_output() -> None:
    assert find_stages(AddedTo(), torch.randn(2, 8)) == []
    (stage,) = find_stages(Chained(), torch.randn(2, 8))
    assert [u.names for u in stage.units] == [("layers.0",), ("layers.1",)]


def test_blocks_inside_a_droppable_block_are_not_a_stage_of_their_own() -> None:
    inner = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    model = nn.Sequential(nn.Linear(4, 8), inner, nn.Linear(8, 2))
    (stage,) = find_stages(model, torch.randn(2, 4))
    assert [u.names for u in stage.units] == [("1",)]
    assert stage.layers == ("1.0", "1.2")


def test_find_stages_leaves_the_model_untouched() -> None:
    model = small_teacher().train()  # batch norm in training mode would update its statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    find_stages(model, torch.randn(2, 40))
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not model._forward_hooks and not model.features[3]._forward_pre_hooks


def tiny_family(*, width: float, depth: int) -> nn.Module:
    return TinyNet(width=max(1, round(16 * width)))


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"width": (0.0, 1.0)}, "StudentFamily.width"),
        ({"width": (1.0, 0.5)}, "StudentFamily.width"),
        ({"width": (0.5,)}, "StudentFamily.width"),
        ({"depth": (0, 3)}, "StudentFamily.depth"),
        ({"depth": (1.0, 3)}, "StudentFamily.depth"),
        ({"depth": (3, 2)}, "StudentFamily.depth"),
        ({"build": "TinyNet"}, "StudentFamily.build"),
    ],
)
def test_a_student_family_is_validated_up_front(fields: dict, named: str) -> None:
    given = {"build": tiny_family, "width": (0.25, 1.0), "depth": (1, 3)} | fields
    with pytest.raises(ValueError, match=named):
        StudentFamily(**given)


def test_experiment_validate_builds_the_smallest_and_largest_student() -> None:
    family = StudentFamily(build=tiny_family, width=(0.25, 1.0), depth=(1, 3))
    build(model=TinyNet, student=family).validate()
    with pytest.raises(EdgeCompressError, match="must be an edgecompress.StudentFamily"):
        build(model=TinyNet, student=tiny_family)


def wrong_classes(*, width: float, depth: int) -> nn.Module:
    return nn.Sequential(nn.Linear(LENGTH, CLASSES + 1))


def broken(*, width: float, depth: int) -> nn.Module:
    if depth > 2:
        raise RuntimeError("no such depth")
    return TinyNet()


@pytest.mark.parametrize(
    ("family", "message"),
    [
        (wrong_classes, r"build\(width=0.25, depth=1\) returns \(1, 5\), the teacher \(1, 4\)"),
        (broken, r"build\(width=1.0, depth=3\) failed .*no such depth"),
    ],
)
def test_experiment_validate_refuses_a_family_that_fails_or_changes_the_output(
    family: object, message: str
) -> None:
    students = StudentFamily(build=family, width=(0.25, 1.0), depth=(1, 3))  # type: ignore[arg-type]
    with pytest.raises(EdgeCompressError, match=message):
        build(model=TinyNet, student=students).validate()
