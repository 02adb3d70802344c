import pytest
import torch
from torch import nn

from edgecompress.compress import ChannelPruner
from edgecompress.plan import InvalidPlan, Plan
from edgecompress.spaces import channel_groups


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv1d(1, 16, 3, padding=1)
        self.a = nn.Conv1d(16, 16, 3, padding=1)
        self.b = nn.Conv1d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x.unsqueeze(1)))
        h = h + self.b(torch.relu(self.a(h)))
        return self.head(h.mean(-1))


def test_pruning_removes_channels_and_keeps_output_shape(tiny) -> None:  # type: ignore[no-untyped-def]
    teacher = tiny.model()
    before = {n: p.clone() for n, p in teacher.state_dict().items()}
    pruned = ChannelPruner(tiny.example_input).apply(
        teacher, Plan({"prune.conv1": 0.5, "prune.conv2": 0.25})
    )
    assert pruned.conv1.out_channels == 8 and pruned.bn1.num_features == 8
    assert pruned.conv2.in_channels == 8 and pruned.conv2.out_channels == 12
    assert pruned.fc.in_features == 12 * 24
    x = torch.randn(5, 24)
    assert pruned(x).shape == teacher(x).shape == (5, 4)
    # the input model is untouched
    assert all(torch.equal(before[n], p) for n, p in teacher.state_dict().items())


def test_ratio_zero_leaves_outputs_identical(tiny) -> None:  # type: ignore[no-untyped-def]
    teacher = tiny.model()
    same = ChannelPruner(tiny.example_input).apply(
        teacher, Plan({"prune.conv1": 0.0, "prune.conv2": 0.0})
    )
    x = torch.randn(7, 24)
    assert torch.equal(same(x), teacher(x))
    assert same is not teacher


def test_pruning_removes_the_smallest_l1_channels(tiny) -> None:  # type: ignore[no-untyped-def]
    teacher = tiny.model()
    with torch.no_grad():
        teacher.conv2.weight[3].zero_()
        teacher.conv2.bias[3] = 0.0
        teacher.fc.weight.view(4, 16, 24)[:, 3] = 0.0
    pruned = ChannelPruner(tiny.example_input).apply(teacher, Plan({"prune.conv2": 1 / 16}))
    x = torch.randn(4, 24)
    # channel 3 contributed nothing, so removing it leaves the function unchanged
    assert pruned.conv2.out_channels == 15
    torch.testing.assert_close(pruned(x), teacher(x), rtol=1e-5, atol=1e-5)


def test_residual_groups_stay_consistent() -> None:
    model = Residual().eval()
    example = torch.zeros(1, 20)
    groups, _ = channel_groups(model, example, exclude=("head",))
    coupled = next(g for g in groups if "stem" in g.layers)
    assert "b" in coupled.layers  # the residual addition couples stem and b
    pruned = ChannelPruner(example).apply(model, Plan({f"prune.{coupled.name}": 0.5}))
    assert pruned.stem.out_channels == pruned.b.out_channels == 8
    assert pruned.head.in_features == 8
    assert pruned(torch.randn(2, 20)).shape == (2, 3)


def test_unknown_layer_is_an_invalid_plan(tiny) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidPlan, match="no layers"):
        ChannelPruner(tiny.example_input).apply(tiny.model(), Plan({"prune.conv9": 0.5}))
