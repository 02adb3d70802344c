from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgecompress.compress.onnx_export import export_onnx, layer_nodes
from edgecompress.compress.quantize import OnnxQuantizer
from edgecompress.compress.sparsity import (
    UnstructuredPruner,
    finalize,
    l1_penalty,
    onnx_weight_sparsity,
    weight_sparsity,
)
from edgecompress.evaluators.compressed_size import gzip_size_mb
from edgecompress.plan import InvalidPlan, Plan


class ConvNet(nn.Module):
    """Conv1d + Linear on ``(batch, 24)`` inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 8, 3)
        self.fc = nn.Linear(8 * 22, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x.unsqueeze(1))).flatten(1))


def _mlp(ties: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    if ties:  # few distinct magnitudes: many entries tie at the cut
        with torch.no_grad():
            for layer in (model[0], model[2]):
                layer.weight.copy_(torch.randint(-2, 3, layer.weight.shape).float())
    return model


def _zeros(t: torch.Tensor) -> int:
    return int((t == 0).sum())


@pytest.mark.parametrize("mode", ["magnitude", "l1"])
def test_magnitude_zeroes_exactly_the_smallest_entries(mode: str) -> None:
    model = _mlp(ties=True)
    plan = Plan({"sparsity.0": 0.3, "sparsity.2": 0.55, "method.sparsity": mode})
    pruned = finalize(UnstructuredPruner().apply(model, plan)[0])
    for name, ratio in (("0", 0.3), ("2", 0.55)):
        before, after = model.get_submodule(name).weight, pruned.get_submodule(name).weight
        assert _zeros(after) == round(ratio * before.numel())
        kept = after != 0
        assert torch.equal(after[kept], before[kept])
        # every entry that survives is at least as large as every entry that was zeroed
        assert before[kept].abs().min() >= before[~kept].abs().max()


def test_l1_selects_the_same_entries_as_magnitude() -> None:
    model = _mlp()
    masks = []
    for mode in ("magnitude", "l1"):
        plan = Plan({"sparsity.0": 0.4, "method.sparsity": mode})
        masks.append(finalize(UnstructuredPruner().apply(model, plan)[0])[0].weight == 0)
    assert torch.equal(masks[0], masks[1])


def test_random_is_exact_deterministic_and_seeded() -> None:
    model = _mlp()
    plan = Plan({"sparsity.0": 0.5, "sparsity.2": 0.25, "method.sparsity": "random"})

    def zero_pattern(seed: int) -> list[torch.Tensor]:
        pruned = finalize(UnstructuredPruner(seed=seed).apply(model, plan)[0])
        return [pruned[0].weight == 0, pruned[2].weight == 0]

    first, again, other = zero_pattern(1), zero_pattern(1), zero_pattern(2)
    assert [int(m.sum()) for m in first] == [round(0.5 * 512), round(0.25 * 256)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0]) and not torch.equal(first[1], other[1])


def test_threshold_zeroes_exactly_the_entries_below_t_std() -> None:
    model = _mlp()
    plan = Plan(
        {
            "sparsity.0": 0.1,  # only enables the layer
            "sparsity.2": 0.0,
            "method.sparsity": "threshold",
            "method.sparsity_threshold": 0.7,
        }
    )
    pruned = finalize(UnstructuredPruner().apply(model, plan)[0])
    w = model[0].weight
    below = w.abs() < 0.7 * w.std()
    assert torch.equal(pruned[0].weight == 0, below)
    assert torch.equal(pruned[2].weight, model[2].weight)


def test_global_reaches_the_combined_share_with_one_cut() -> None:
    model = _mlp()
    model.append(nn.Linear(8, 8))
    plan = Plan(
        {
            "sparsity.0": 0.5,
            "sparsity.2": 0.5,
            "sparsity.3": 0.0,
            "method.sparsity": "global",
            "method.global_sparsity": 0.6,
        }
    )
    pruned = finalize(UnstructuredPruner().apply(model, plan)[0])
    befores = torch.cat([model[0].weight.flatten(), model[2].weight.flatten()])
    afters = torch.cat([pruned[0].weight.flatten(), pruned[2].weight.flatten()])
    assert abs(_zeros(afters) - 0.6 * befores.numel()) <= 1
    kept = afters != 0
    assert befores[kept].abs().min() >= befores[~kept].abs().max()
    assert torch.equal(pruned[3].weight, model[3].weight)


@pytest.mark.parametrize(
    "extra",
    [
        {"method.sparsity": "magnitude"},
        {"method.sparsity": "random"},
        {"method.sparsity": "threshold", "method.sparsity_threshold": 1.0},
        {"method.sparsity": "global", "method.global_sparsity": 0.5},
    ],
)
def test_biases_are_never_pruned(extra: dict[str, str | float]) -> None:
    model = _mlp()
    with torch.no_grad():
        model[0].bias.mul_(1e-3)  # tiny biases would be the first to go, were they candidates
    pruned = UnstructuredPruner().apply(model, Plan({"sparsity.0": 0.9, **extra}))[0]
    assert torch.equal(pruned[0].bias, model[0].bias)
    assert not hasattr(pruned[0], "bias_orig")


def test_the_input_model_is_never_mutated() -> None:
    model = _mlp()
    before = {n: t.clone() for n, t in model.state_dict().items()}
    UnstructuredPruner().apply(model, Plan({"sparsity.0": 0.5, "sparsity.2": 0.5}))[0]
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_a_plan_without_sparsity_returns_an_unchanged_copy() -> None:
    model = _mlp()
    for plan in (Plan({}), Plan({"sparsity.0": 0.0, "bits.0": 8})):
        copy = UnstructuredPruner().apply(model, plan)[0]
        assert copy is not model
        assert all(not m._forward_pre_hooks for m in copy.modules())
        assert copy.state_dict().keys() == model.state_dict().keys()
        assert all(torch.equal(t, model.state_dict()[n]) for n, t in copy.state_dict().items())


def test_masks_survive_finetuning_and_finalize_leaves_plain_parameters() -> None:
    pruned = UnstructuredPruner().apply(_mlp(), Plan({"sparsity.0": 0.5, "sparsity.2": 0.8}))[0]
    zeros = {name: pruned.get_submodule(name).weight == 0 for name in ("0", "2")}
    optimizer = torch.optim.SGD(pruned.parameters(), lr=0.5, momentum=0.9)
    for _ in range(5):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(pruned(torch.randn(32, 16)), torch.randint(0, 8, (32,)))
        loss.backward()
        optimizer.step()
    finalize(pruned)
    finalize(pruned)  # idempotent
    for name, zero in zeros.items():
        layer = pruned.get_submodule(name)
        assert isinstance(layer.weight, nn.Parameter)
        assert torch.all(layer.weight[zero] == 0)
        assert torch.any(layer.weight[~zero] != 0)
        assert not hasattr(layer, "weight_orig") and not hasattr(layer, "weight_mask")
        assert not layer._forward_pre_hooks
    assert {n for n, _ in pruned.named_parameters()} == {n for n, _ in _mlp().named_parameters()}


def test_finalize_is_safe_on_a_model_without_masks() -> None:
    model = _mlp()
    before = {n: t.clone() for n, t in model.state_dict().items()}
    assert finalize(model) is model
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())


def test_a_container_prunes_every_layer_inside_it() -> None:
    model = ConvNet()
    model.fc = nn.Sequential(nn.Linear(8 * 22, 6), nn.Linear(6, 4))  # low-rank factorization
    pruned = finalize(UnstructuredPruner().apply(model, Plan({"sparsity.fc": 0.5}))[0])
    sparsity = weight_sparsity(pruned)
    assert set(sparsity) == {"conv", "fc.0", "fc.1"}
    assert sparsity["fc.0"] == sparsity["fc.1"] == 0.5
    assert sparsity["conv"] == 0.0


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ({"sparsity.fc7": 0.5}, "no layers"),
        ({"sparsity.fc": 1.0}, r"\[0, 1\)"),
        ({"sparsity.fc": -0.1}, r"\[0, 1\)"),
        ({"sparsity.fc": 0.5, "method.sparsity": "lottery"}, "unknown mode"),
        ({"sparsity.fc": 0.5, "method.sparsity": "threshold"}, "method.sparsity_threshold"),
        ({"sparsity.fc": 0.5, "method.sparsity": "global"}, "method.global_sparsity"),
        (
            {"sparsity.fc": 0.5, "method.sparsity": "global", "method.global_sparsity": 1.0},
            "method.global_sparsity",
        ),
    ],
)
def test_invalid_plans(entries: dict[str, str | float], match: str) -> None:
    with pytest.raises(InvalidPlan, match=match):
        UnstructuredPruner().apply(ConvNet(), Plan(entries))[0]


def _export(model: nn.Module, path: Path) -> Path:
    return export_onnx(model, torch.randn(2, 24), path)


def test_zeros_survive_onnx_export_and_int8_quantization(tmp_path: Path) -> None:
    torch.manual_seed(0)
    plan = Plan({"sparsity.conv": 0.5, "sparsity.fc": 0.9})
    model = finalize(UnstructuredPruner().apply(ConvNet(), plan)[0])
    fp32 = _export(model, tmp_path / "fp32.onnx")
    nodes = layer_nodes(onnx.load(str(fp32)))
    torch_share = weight_sparsity(model)
    float_share = onnx_weight_sparsity(onnx.load(str(fp32)))
    for layer in ("conv", "fc"):
        assert float_share[nodes[layer]] == pytest.approx(torch_share[layer], abs=1e-6)

    quantizer = OnnxQuantizer(
        calibration=lambda: [np.random.rand(8, 24).astype(np.float32) for _ in range(4)]
    )
    bits = Plan({"bits.conv": 8, "bits.fc": 8})
    quantizer.apply(fp32, tmp_path / "q8.onnx", bits)
    q8 = onnx.load(str(tmp_path / "q8.onnx"))
    int8_share = onnx_weight_sparsity(q8)
    for layer in ("conv", "fc"):
        assert int8_share[layer_nodes(q8)[layer]] >= float_share[nodes[layer]]


def test_gzip_size_shrinks_with_sparsity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ConvNet()
    sparse = finalize(UnstructuredPruner().apply(model, Plan({"sparsity.fc": 0.9}))[0])
    dense_path = _export(model, tmp_path / "dense.onnx")
    sparse_path = _export(sparse, tmp_path / "sparse.onnx")
    assert dense_path.stat().st_size == sparse_path.stat().st_size  # zeros still take room
    assert gzip_size_mb(sparse_path) < 0.5 * gzip_size_mb(dense_path)


def test_l1_penalty_is_the_summed_absolute_weight_and_differentiable() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 1), nn.Linear(1, 1)))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0], [0.0, 3.0]]))
        model[1][0].weight.copy_(torch.tensor([[-4.0, 0.5]]))
        model[1][1].weight.copy_(torch.tensor([[-0.5]]))
    penalty = l1_penalty(model, ["0", "1"])
    assert penalty.item() == pytest.approx(1 + 2 + 0 + 3 + 4 + 0.5 + 0.5)
    penalty.backward()
    assert model[0].weight.grad is not None
    assert torch.allclose(model[0].weight.grad, torch.tensor([[1.0, -1.0], [0.0, 1.0]]))
    assert model[0].bias.grad is None
    assert l1_penalty(model, ["1.1"]).item() == pytest.approx(0.5)
