"""The test model zoo: every model runs, exports to ONNX, and survives structured pruning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch_pruning as tp
from torch import nn

from edgecompress.compress import ChannelPruner
from edgecompress.compress.onnx_export import export_onnx
from edgecompress.plan import Plan
from edgecompress.spaces import channel_groups
from tests.models import (
    CLASSES,
    EXAMPLE_INPUTS,
    OUTPUT_LAYER,
    ZOO,
    DepthwiseBlockNet,
    EncoderLayer,
    InvertedResidual,
    TinyTransformer,
)

NAMES = sorted(ZOO)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _assert_ort_matches(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    onnx_path = export_onnx(model, example, path)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batch = torch.randn(3, *example.shape[1:], generator=torch.Generator().manual_seed(1))
    (got,) = session.run(None, {"input": batch.numpy()})
    with torch.no_grad():
        expected = model.eval()(batch).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)


def _half_of_every_group(name: str) -> tuple[nn.Module, nn.Module, Plan]:
    model, example = ZOO[name](), EXAMPLE_INPUTS[name]
    groups, _ = channel_groups(model, example, exclude=(OUTPUT_LAYER,))
    plan = Plan({f"prune.{g.name}": 0.5 for g in groups})
    return model, ChannelPruner(example).apply(model, plan)[0], plan


@pytest.mark.parametrize("name", NAMES)
def test_forward_gives_logits(name: str) -> None:
    model, example = ZOO[name](), EXAMPLE_INPUTS[name]
    with torch.no_grad():
        logits = model(example)
    assert logits.shape == (example.shape[0], CLASSES)
    assert torch.isfinite(logits).all()
    assert list(dict(model.named_modules()))[-1] == OUTPUT_LAYER


@pytest.mark.parametrize("name", NAMES)
def test_factories_are_seeded(name: str) -> None:
    a, b = ZOO[name]().state_dict(), ZOO[name]().state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_matches_onnxruntime(name: str, tmp_path: Path) -> None:
    _assert_ort_matches(ZOO[name](), EXAMPLE_INPUTS[name], tmp_path / f"{name}.onnx")


@pytest.mark.parametrize("name", NAMES)
def test_dependency_graph_has_channel_groups(name: str) -> None:
    model, example = ZOO[name](), EXAMPLE_INPUTS[name]
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    assert graph.get_pruner_of_module(getattr(model, OUTPUT_LAYER)) is not None
    groups, skipped = channel_groups(model, example, exclude=(OUTPUT_LAYER,))
    assert groups, f"{name}: no prunable channel group"
    assert all(g.channels > 1 and g.name in g.layers for g in groups)
    assert OUTPUT_LAYER not in {layer for g in groups for layer in g.layers}
    assert OUTPUT_LAYER in {s.layer for s in skipped}


@pytest.mark.parametrize("name", NAMES)
def test_half_pruned_model_runs_and_exports(name: str, tmp_path: Path) -> None:
    model, pruned, plan = _half_of_every_group(name)
    assert len(plan) >= 1
    example = EXAMPLE_INPUTS[name]
    with torch.no_grad():
        assert pruned(example).shape == model(example).shape
    assert _params(pruned) < 0.6 * _params(model)
    _assert_ort_matches(pruned, example, tmp_path / f"{name}-pruned.onnx")


def test_residual_and_concat_groups() -> None:
    groups, _ = channel_groups(
        ZOO["residual_cnn"](), EXAMPLE_INPUTS["residual_cnn"], exclude=(OUTPUT_LAYER,)
    )
    by_name = {g.name: set(g.layers) for g in groups}
    # the identity skip couples the stem with the first block's last conv
    assert {"stem", "blocks.0.conv2"} <= by_name["stem"]
    # the projection skip couples the 1x1 projection with the second block's last conv
    assert {"blocks.1.skip.0", "blocks.1.conv2"} <= by_name["blocks.1.conv2"]
    # the two concatenated branches are pruned independently
    assert "mix.branch3x3" in by_name and "mix.branch1x1" in by_name


def test_depthwise_groups_couple_expand_and_depthwise() -> None:
    _, pruned, _ = _half_of_every_group("depthwise")
    assert isinstance(pruned, DepthwiseBlockNet)
    block = pruned.blocks[0]
    assert isinstance(block, InvertedResidual)
    assert block.expand.out_channels == block.depthwise.out_channels == 32
    assert block.depthwise.groups == 32
    assert pruned.stem.out_channels == block.project.out_channels == 8  # the inverted residual


def test_transformer_prunes_ffn_hidden_and_model_width() -> None:
    model, pruned, plan = _half_of_every_group("transformer")
    assert isinstance(model, TinyTransformer) and isinstance(pruned, TinyTransformer)
    assert {"prune.blocks.0.fc1", "prune.blocks.1.fc1"} <= set(plan)
    for block in pruned.blocks:
        assert isinstance(block, EncoderLayer)
        assert block.fc1.out_features == block.fc2.in_features == 32
        # the residual stream (d_model) is one group: the attention keeps its 4 heads, each narrower
        assert block.attn.embed_dim == 16 and block.attn.num_heads == 4
        assert block.attn.head_dim == 4
    assert pruned.pos.shape == (1, 8, 16)
    assert pruned.embed.out_features == pruned.head.in_features == 16
    untouched = model.blocks[0]
    assert isinstance(untouched, EncoderLayer) and untouched.attn.embed_dim == 32


def test_a_parameter_outside_layers_prints_no_warning() -> None:
    """torch-pruning warns about the positional parameter on every graph it builds; it was
    printed on every trial, through the progress bar."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, pruned, _ = _half_of_every_group("transformer")
        channel_groups(ZOO["transformer"]().eval(), EXAMPLE_INPUTS["transformer"], exclude=())
    assert isinstance(pruned, TinyTransformer) and pruned.pos.shape == (1, 8, 16)
    assert not [w for w in caught if "Unwrapped parameters" in str(w.message)]


@pytest.mark.parametrize("ratio", [0.1, 0.2, 0.3])
def test_transformer_width_stays_a_multiple_of_the_heads(ratio: float) -> None:
    # torch-pruning 1.6.1 alone would prune embed_dim 32 -> 29 at 0.1, which 4 heads do not
    # divide (the model then fails in forward); ChannelPruner rounds to a multiple of the heads
    model, example = ZOO["transformer"](), EXAMPLE_INPUTS["transformer"]
    groups, _ = channel_groups(model, example, exclude=(OUTPUT_LAYER,))
    width = next(g for g in groups if "embed" in g.layers)
    pruned = ChannelPruner(example).apply(model, Plan({f"prune.{width.name}": ratio}))[0]
    embed_dim = pruned.blocks[0].attn.embed_dim  # type: ignore[index, union-attr]
    assert embed_dim % 4 == 0 and embed_dim < 32
    with torch.no_grad():
        assert pruned(example).shape == (2, CLASSES)
