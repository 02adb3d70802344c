import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgecompress.compress.lowrank import (
    LowRankFactorizer,
    choose_ranks,
    factorize,
    not_factorizable,
)
from edgecompress.compress.onnx_export import export_onnx
from edgecompress.plan import InvalidPlan, Plan, Value

# MKL's threaded SVD of a tiny matrix stalls (~100 ms) while another process holds a core
pytestmark = pytest.mark.usefixtures("one_thread")


# (layer, input shape, method, full ranks)
EXACT = [
    (nn.Linear(12, 7), (3, 12), "tucker2", 7),
    (nn.Linear(5, 9, bias=False), (4, 2, 5), "tucker2", 5),
    (nn.Conv1d(5, 6, 5, padding=2), (2, 5, 20), "tucker2", (5, 6)),
    (nn.Conv1d(1, 16, 3, stride=2), (2, 1, 21), "tucker2", (1, 16)),
    (nn.Conv1d(6, 4, 1, stride=2, padding=1), (2, 6, 15), "tucker2", 4),
    (nn.Conv2d(6, 3, 1), (2, 6, 7, 7), "spatial_svd", 3),
    (nn.Conv2d(4, 6, 3, stride=2, padding=1), (2, 4, 11, 11), "tucker2", (4, 6)),
    (nn.Conv2d(4, 6, 3, stride=2, padding=1), (2, 4, 11, 11), "spatial_svd", 12),
    (nn.Conv2d(4, 6, 3, padding=2, dilation=2), (2, 4, 10, 10), "tucker2", (4, 6)),
    (nn.Conv2d(4, 6, 3, padding=2, dilation=2), (2, 4, 10, 10), "spatial_svd", 12),
    (nn.Conv2d(3, 5, (3, 5), (1, 2), (1, 2), (2, 1)), (2, 3, 9, 12), "tucker2", (3, 5)),
    (nn.Conv2d(3, 5, (3, 5), (1, 2), (1, 2), (2, 1)), (2, 3, 9, 12), "spatial_svd", 9),
    (nn.Conv2d(4, 6, 3, padding="same", bias=False), (2, 4, 8, 8), "spatial_svd", 12),
    (nn.Conv2d(4, 6, (1, 3), padding=(0, 1)), (2, 4, 5, 8), "spatial_svd", 4),
    (nn.Conv2d(4, 6, (3, 1), stride=2), (2, 4, 9, 8), "spatial_svd", 6),
    (nn.Conv1d(4, 6, 3, padding=1, padding_mode="circular"), (2, 4, 10), "tucker2", (4, 6)),
    (nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"), (2, 4, 8, 9), "spatial_svd", 12),
    (nn.Conv2d(4, 6, 3, padding=1, padding_mode="circular"), (2, 4, 8, 9), "spatial_svd", 12),
    (nn.Conv2d(4, 6, 3, padding=1, padding_mode="replicate"), (2, 4, 8, 9), "tucker2", (4, 6)),
]


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


@pytest.mark.parametrize(("layer", "shape", "method", "full"), EXACT)
def test_full_rank_reproduces_the_layer(
    layer: nn.Module, shape: tuple[int, ...], method: str, full: int | tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape)
    low = factorize(layer, ranks=full, method=method)
    assert isinstance(low, nn.Sequential) and len(low) in (2, 3)
    with torch.no_grad():
        assert _relative_error(low(x), layer(x)) < 1e-4


def test_float64_layers_stay_float64() -> None:
    layer = nn.Linear(6, 4).double()
    low = factorize(layer, ranks=4)
    x = torch.randn(3, 6, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in low.parameters())
    assert _relative_error(low(x), layer(x)) < 1e-12


def test_truncation_keeps_the_leading_singular_values() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(10, 8, bias=False)
    low = factorize(layer, ranks=3)
    weight = layer.weight.detach().double()
    product = (low[1].weight @ low[0].weight).detach().double()
    s = torch.linalg.svdvals(weight)
    error = torch.linalg.matrix_norm(product - weight, ord=2)
    assert float(error) == pytest.approx(float(s[3]), rel=1e-4)


def test_tucker2_recovers_a_weight_of_that_multilinear_rank() -> None:
    torch.manual_seed(0)
    layer = nn.Conv2d(6, 8, 3, padding=1)
    core, u_out, u_in = torch.randn(3, 2, 3, 3), torch.randn(8, 3), torch.randn(6, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.einsum("ba...,ob,ca->oc...", core, u_out, u_in))
    x = torch.randn(2, 6, 7, 7)
    low = factorize(layer, ranks=(2, 3))
    assert [m.out_channels for m in low] == [2, 3, 8]
    assert _relative_error(low(x), layer(x)) < 1e-4


def _macs_per_output(module: nn.Module, x: torch.Tensor, positions: int) -> float:
    """Multiply-adds actually run, per output position of the dense layer."""
    total = 0

    def count(layer: nn.Module, _: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Linear):
            total += out.numel() * layer.in_features
        elif isinstance(layer, (nn.Conv1d, nn.Conv2d)):
            per = layer.in_channels // layer.groups * math.prod(layer.kernel_size)
            total += out.numel() * per

    leaves = [m for m in module.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    with torch.no_grad():
        module(x)
    for hook in hooks:
        hook.remove()
    return total / positions


def _next_ranks(ranks: tuple[int, ...], full: tuple[int, ...]) -> tuple[int, ...] | None:
    """The next rank choice up: one more rank, or for Tucker-2 the next step of the fraction."""
    if len(ranks) == 1:
        return (ranks[0] + 1,) if ranks[0] < full[0] else None
    (r_in, r_out), (cin, cout) = ranks, full
    f = min(Fraction(r_in, cin), Fraction(r_out, cout))  # the largest f giving these ranks
    if f == 1:
        return None
    return (r_in + (Fraction(r_in, cin) == f), r_out + (Fraction(r_out, cout) == f))


# (layer, input shape whose extent is stride x the output's, method, full ranks)
SHARED = [
    (nn.Linear(64, 48), (1, 64), "tucker2", (48,)),
    (nn.Conv1d(16, 24, 5, padding=2), (1, 16, 32), "spatial_svd", (16, 24)),
    (nn.Conv1d(12, 20, 3, stride=2, padding=1), (1, 12, 32), "tucker2", (12, 20)),
    (nn.Conv2d(16, 24, 3, stride=2, padding=1), (1, 16, 16, 16), "tucker2", (16, 24)),
    (nn.Conv2d(16, 24, 3, stride=2, padding=1), (1, 16, 16, 16), "spatial_svd", (48,)),
    (nn.Conv2d(16, 32, 1, stride=2), (1, 16, 16, 16), "tucker2", (16,)),
]


@pytest.mark.parametrize(("layer", "shape", "method", "full"), SHARED)
@pytest.mark.parametrize("share", [0.05, 0.25, 0.5, 0.8, 0.99])
def test_ranks_are_the_largest_within_the_share(
    layer: nn.Module, shape: tuple[int, ...], method: str, full: tuple[int, ...], share: float
) -> None:
    x = torch.randn(shape)
    with torch.no_grad():
        y = layer(x)
    positions = y.numel() // y.shape[1]
    dense = _macs_per_output(layer, x, positions)
    ranks = choose_ranks(layer, share, method)
    assert ranks is not None and len(ranks) == len(full)

    def cost(r: tuple[int, ...]) -> float:
        return _macs_per_output(factorize(layer, ranks=r, method=method), x, positions)

    if cost(ranks) > share * dense:  # below the smallest factorization: rank 1 all the same
        assert set(ranks) == {1} and cost(ranks) < dense
    following = _next_ranks(ranks, full)
    assert following is None or cost(following) > share * dense


def test_a_layer_no_rank_makes_cheaper_stays_dense() -> None:
    narrow = nn.Linear(1, 8)  # rank 1 costs 1 + 8 > 8 multiply-adds
    assert choose_ranks(narrow, 0.5, "tucker2") is None
    assert choose_ranks(nn.Linear(64, 64), 0.001, "tucker2") == (1,)
    assert choose_ranks(nn.Linear(64, 64), 1.0, "tucker2") is None
    model = nn.Sequential(narrow, nn.ReLU(), nn.Linear(8, 8))
    plan = Plan({"rank.0": 0.5, "rank.2": 0.5})
    low, report = LowRankFactorizer().apply(model, plan)
    assert report == {"ranks": {"0": None, "2": [2]}}  # 2 * 16 <= 32
    assert isinstance(low[0], nn.Linear) and isinstance(low[2], nn.Sequential)


def test_conv1d_takes_tucker2_whatever_the_method() -> None:
    layer = nn.Conv1d(8, 8, 3)
    assert choose_ranks(layer, 0.5, "spatial_svd") == choose_ranks(layer, 0.5, "tucker2")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(2, 8, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(16, 16, 3, padding=1, groups=16),
        )
        self.classifier = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(-1))


PLAN = {
    "rank.features.0": 0.6,
    "rank.features.2": 0.5,
    "rank.classifier.0": 0.5,
    "rank.classifier.2": 1.0,
    "rank.features.4": 1.0,
}


def test_apply_replaces_the_layers_and_leaves_the_input_alone() -> None:
    torch.manual_seed(0)
    model = Net().eval()
    before = {n: p.clone() for n, p in model.state_dict().items()}
    structure = [(n, type(m)) for n, m in model.named_modules()]
    factorizer = LowRankFactorizer()
    low, report = factorizer.apply(model, Plan(PLAN))
    assert [(n, type(m)) for n, m in model.named_modules()] == structure
    assert before.keys() == model.state_dict().keys()
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
    names = dict(low.named_modules())
    assert {"features.0.2", "features.2.2", "classifier.0.1"} <= set(names)
    assert type(names["classifier.2"]) is nn.Linear and type(names["features.4"]) is nn.Conv1d
    ranks = report["ranks"]
    assert ranks["classifier.2"] is None and ranks["features.4"] is None
    assert ranks["features.2"] == [
        names["features.2.0"].out_channels,
        names["features.2.1"].out_channels,
    ]
    assert ranks["classifier.0"] == [names["classifier.0.0"].out_features]
    x = torch.randn(3, 2, 24)
    assert low(x).shape == model(x).shape == (3, 4)
    assert not low.training


def test_shares_of_one_change_nothing() -> None:
    model = Net()
    same = LowRankFactorizer().apply(model, Plan({"rank.features.0": 1.0, "rank.features.4": 1}))[0]
    x = torch.randn(2, 2, 24)
    assert same is not model and type(same.features[0]) is nn.Conv1d
    assert torch.equal(same(x), model(x))


@pytest.mark.parametrize(
    ("entries", "words"),
    [
        ({"rank.features.9": 0.5}, ["features.9"]),
        ({"rank.features.4": 0.5}, ["rank.features.4", "groups=16"]),
        ({"rank.features.3": 0.5}, ["rank.features.3", "ReLU"]),
        ({"rank.features.0": 0.0}, ["(0, 1]"]),
        ({"rank.features.0": 1.5}, ["(0, 1]"]),
        ({"rank.features.0": "half"}, ["(0, 1]"]),
        ({"rank.features.0": True}, ["(0, 1]"]),
        ({"rank.features.0": 0.5, "method.decomposition": "cp"}, ["tucker2", "spatial_svd"]),
    ],
)
def test_invalid_plans_say_what_is_wrong(entries: dict[str, Value], words: list[str]) -> None:
    with pytest.raises(InvalidPlan) as error:
        LowRankFactorizer().apply(Net(), Plan(entries))[0]
    assert all(word in str(error.value) for word in words)


def test_what_cannot_be_factorized() -> None:
    assert not_factorizable(nn.Linear(3, 4)) is None
    assert not_factorizable(nn.Conv2d(3, 4, 3)) is None
    assert "groups=4" in str(not_factorizable(nn.Conv2d(4, 4, 3, groups=4)))
    assert "ConvTranspose1d" in str(not_factorizable(nn.ConvTranspose1d(4, 4, 3)))
    assert "Conv3d" in str(not_factorizable(nn.Conv3d(4, 4, 3)))
    with pytest.raises(InvalidPlan, match="groups"):
        choose_ranks(nn.Conv1d(4, 4, 3, groups=2), 0.5, "tucker2")
    with pytest.raises(InvalidPlan, match="spatial_svd"):
        factorize(nn.Conv2d(4, 4, 3), ranks=2, method="svd")
    with pytest.raises(ValueError, match="ranks"):
        factorize(nn.Conv2d(4, 4, 3), ranks=2, method="tucker2")
    with pytest.raises(ValueError, match="ranks"):
        factorize(nn.Linear(4, 3), ranks=4)


def test_onnx_export_of_factorized_layers_matches_pytorch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    plan = Plan({"rank.features.2": 0.5, "rank.classifier.0": 0.5})
    low = LowRankFactorizer().apply(Net(), plan)[0].eval()
    assert isinstance(low.features[2], nn.Sequential)
    path = export_onnx(low, torch.randn(2, 2, 24), tmp_path / "low.onnx")
    x = torch.randn(5, 2, 24)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, low(x).numpy(), rtol=1e-3, atol=1e-5)
