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
    )[0]
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
    )[0]
    x = torch.randn(7, 24)
    assert torch.equal(same(x), teacher(x))
    assert same is not teacher


def test_pruning_removes_the_smallest_l1_channels(tiny) -> None:  # type: ignore[no-untyped-def]
    teacher = tiny.model()
    with torch.no_grad():
        teacher.conv2.weight[3].zero_()
        teacher.conv2.bias[3] = 0.0
        teacher.fc.weight.view(4, 16, 24)[:, 3] = 0.0
    pruned = ChannelPruner(tiny.example_input).apply(teacher, Plan({"prune.conv2": 1 / 16}))[0]
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
    pruned = ChannelPruner(example).apply(model, Plan({f"prune.{coupled.name}": 0.5}))[0]
    assert pruned.stem.out_channels == pruned.b.out_channels == 8
    assert pruned.head.in_features == 8
    assert pruned(torch.randn(2, 20)).shape == (2, 3)


def test_unknown_layer_is_an_invalid_plan(tiny) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidPlan, match="no layers"):
        ChannelPruner(tiny.example_input).apply(tiny.model(), Plan({"prune.conv9": 0.5}))[0]


class BnNet(nn.Module):
    """Two conv+BN blocks and a head: a group with batch norm, and one without (``c``)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv1d(1, 16, 3, padding=1)
        self.bn = nn.BatchNorm1d(16)
        self.c = nn.Conv1d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.a(x.unsqueeze(1))))
        return self.head(torch.relu(self.c(h)).mean(-1))


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 20, generator=g), torch.randint(0, 3, (8,), generator=g))]


def _kept(model: nn.Module, plan: Plan, **kw: object) -> torch.Tensor:
    """Which of ``a``'s original output channels survive: matched by their weights."""
    pruner = ChannelPruner(torch.zeros(1, 20), batches=_batches, **kw)  # type: ignore[arg-type]
    pruned = pruner.apply(model, plan)[0]
    rows = model.a.weight.flatten(1)  # type: ignore[union-attr]
    kept = pruned.a.weight.flatten(1)  # type: ignore[union-attr]
    return torch.tensor([any(torch.equal(r, k) for k in kept) for r in rows])


@pytest.mark.parametrize("criterion", ["l1", "l2", "taylor", "bn_scale", "fpgm", "random"])
def test_every_criterion_prunes_and_keeps_the_function_shape(criterion: str) -> None:
    torch.manual_seed(0)
    model = BnNet().eval()
    plan = Plan({"prune.a": 0.5, "prune.c": 0.25, "method.prune_criterion": criterion})
    pruner = ChannelPruner(torch.zeros(1, 20), batches=_batches, seed=3)
    pruned, report = pruner.apply(model, plan)
    assert pruned.a.out_channels == pruned.bn.num_features == 8  # type: ignore[union-attr]
    assert pruned.c.out_channels == 12  # type: ignore[union-attr]
    assert pruned(torch.randn(2, 20)).shape == (2, 3)
    # criteria that need no batch norm never fall back; bn_scale falls back for ``c`` only
    expected = ["c: no batch norm in its group, ranked by l1"] if criterion == "bn_scale" else []
    assert report.get("criterion_fallbacks", []) == expected


def test_bn_scale_removes_the_channels_with_the_smallest_scale() -> None:
    torch.manual_seed(0)
    model = BnNet().eval()
    with torch.no_grad():
        model.bn.weight.copy_(torch.arange(1.0, 17.0))  # channel i has scale i + 1
    kept = _kept(model, Plan({"prune.a": 0.25, "method.prune_criterion": "bn_scale"}))
    assert kept.tolist() == [False] * 4 + [True] * 12


def test_l1_and_l2_rank_differently_where_they_should() -> None:
    torch.manual_seed(0)
    model = BnNet().eval()
    with torch.no_grad():
        model.a.weight.fill_(0.1)
        model.c.weight.zero_()
        model.bn.weight.fill_(1.0)
        model.a.weight[0] = torch.tensor([[0.5, 0.0, 0.0]])  # l1 0.5, l2 0.25: top by l2 only
        model.a.weight[1] = torch.tensor([[0.2, 0.2, 0.2]])  # l1 0.6, l2 0.12: top by l1 only
    # the group also contains bn (equal) and c (zero), so the ranking is decided by ``a``
    by_l1 = _kept(model, Plan({"prune.a": 15 / 16, "method.prune_criterion": "l1"}))
    by_l2 = _kept(model, Plan({"prune.a": 15 / 16, "method.prune_criterion": "l2"}))
    assert by_l1.nonzero().flatten().tolist() == [1]
    assert by_l2.nonzero().flatten().tolist() == [0]


def test_random_criterion_is_seeded() -> None:
    model = BnNet().eval()
    plan = Plan({"prune.a": 0.5, "method.prune_criterion": "random"})
    assert torch.equal(_kept(model, plan, seed=1), _kept(model, plan, seed=1))
    assert not torch.equal(_kept(model, plan, seed=1), _kept(model, plan, seed=2))


def test_taylor_without_batches_is_an_invalid_plan() -> None:
    plan = Plan({"prune.a": 0.5, "method.prune_criterion": "taylor"})
    with pytest.raises(InvalidPlan, match="training batches"):
        ChannelPruner(torch.zeros(1, 20)).apply(BnNet(), plan)[0]


@pytest.mark.parametrize(
    ("ratio", "round_to", "kept"), [(0.3, 1, 11), (0.3, 4, 12), (0.3, 8, 8), (0.9, 8, 8)]
)
def test_round_to_keeps_a_multiple_of_channels(ratio: float, round_to: int, kept: int) -> None:
    plan = Plan({"prune.a": ratio, "method.round_to": round_to})
    pruned = ChannelPruner(torch.zeros(1, 20)).apply(BnNet(), plan)[0]
    assert pruned.a.out_channels == kept  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "entries",
    [{"method.prune_criterion": "entropy"}, {"method.round_to": 0}, {"method.round_to": 2.5}],
)
def test_bad_method_settings_are_invalid_plans(entries: dict[str, object]) -> None:
    plan = Plan({"prune.a": 0.5, **entries})  # type: ignore[dict-item]
    with pytest.raises(InvalidPlan, match="method"):
        ChannelPruner(torch.zeros(1, 20)).apply(BnNet(), plan)[0]


def test_attention_heads_lose_the_same_channels_each() -> None:
    from edgecompress.compress.prune import least_important

    scores = torch.tensor([5.0, 1.0, 6.0, 7.0, 0.5, 0.1, 0.2, 0.3])  # 2 heads of 4 channels
    # unconstrained, the 3 lowest are all in head 1; per head, each head loses 2
    assert least_important(scores, 3) == [5, 6, 7]
    assert least_important(scores, 4, heads=2) == [0, 1, 5, 6]


def test_taylor_removes_a_channel_nothing_downstream_uses() -> None:
    torch.manual_seed(0)
    model = BnNet().eval()
    with torch.no_grad():
        model.a.weight[5] = 5.0  # large by magnitude: l1 keeps it
        model.c.weight[:, 5] = 0.0  # but nothing reads it: no gradient, taylor removes it
    plan = {"prune.a": 1 / 16}
    by_taylor = _kept(model, Plan({**plan, "method.prune_criterion": "taylor"}))
    by_l1 = _kept(model, Plan({**plan, "method.prune_criterion": "l1"}))
    assert not by_taylor[5] and int(by_taylor.sum()) == 15
    assert by_l1[5]
