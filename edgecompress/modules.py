"""Facts about PyTorch modules that both the spaces and the compressors need."""

from __future__ import annotations

import warnings
from typing import Any

import torch_pruning as tp
from torch import nn

from edgecompress.inputs import call

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
# parents whose forward reads their children's weights itself (fused kernels, functional calls)
READS_CHILD_WEIGHTS = (
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
)


def weights_read_directly(model: nn.Module) -> list[str]:
    """Layers (in model order) whose parent reads their weight itself instead of calling them:
    the output projection of ``nn.MultiheadAttention``, the feed-forward layers of
    ``nn.TransformerEncoderLayer`` (its fast path). They cannot be replaced or reparametrized."""
    found: list[str] = []
    for parent_name, parent in model.named_modules():
        if isinstance(parent, READS_CHILD_WEIGHTS):
            for child, module in parent.named_children():
                path = f"{parent_name}.{child}" if parent_name else child
                if isinstance(module, WEIGHT_LAYERS) and path not in found:
                    found.append(path)
    return found


def dependency_graph(model: nn.Module, example_input: Any) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of ``model``, without its "Unwrapped parameters
    detected" warning, which was printed on every trial through the progress bar: parameters
    outside a layer (a positional embedding, a class token) are pruned along the dimension
    torch-pruning infers for them (the test zoo's transformer's narrows with its width)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        return tp.DependencyGraph().build_dependency(
            model, example_inputs=example_input, forward_fn=call
        )
