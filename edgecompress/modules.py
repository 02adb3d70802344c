"""Facts about PyTorch modules that both the spaces and the compressors need."""

from __future__ import annotations

from torch import nn

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
