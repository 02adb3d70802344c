"""What may vary: pruning ratios, precisions, fine-tuning settings; sampled into a Plan."""

from __future__ import annotations

from dataclasses import fields

import torch
from torch import nn

from edgecompress.spaces.base import Knob, KnobSpace, Skipped, Space, describe
from edgecompress.spaces.joint import Joint
from edgecompress.spaces.layers import ChannelGroup, channel_groups, output_layer, weight_layers
from edgecompress.spaces.precision import FP32, INT8, precision
from edgecompress.spaces.pruning import channel_pruning

__all__ = [
    "FP32",
    "INT8",
    "ChannelGroup",
    "Joint",
    "Knob",
    "KnobSpace",
    "Skipped",
    "Space",
    "channel_groups",
    "channel_pruning",
    "default_space",
    "describe",
    "fixed",
    "precision",
]


def fixed(prefix: str, settings: object) -> KnobSpace:
    """Fixed plan entries from a dataclass of settings, e.g. ``finetune.epochs``."""
    knobs = tuple(
        Knob(name=f"{prefix}.{f.name}", kind="fixed", value=getattr(settings, f.name))
        for f in fields(settings)  # type: ignore[arg-type]
    )
    return KnobSpace(knobs)


def default_space(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    finetune: object,
    exclude: tuple[str, ...] = (),
    max_prune: float = 0.9,
    quantizable: list[str] | None = None,
) -> Joint:
    """Per-group channel pruning and per-layer precision for every weight layer found.

    The output layer is never pruned (its channels are the model's outputs); ``exclude`` leaves
    further layers alone. ``quantizable`` limits precision knobs to the layers that have an ONNX
    node of their own (a module the forward pass never calls has none).
    """
    last = output_layer(model)
    groups, skipped = channel_groups(model, example_input, exclude=tuple(exclude) + (last,))
    skipped = [s for s in skipped if s.layer != last]
    skipped.insert(0, Skipped(last, "output layer: its channels are the model's outputs"))
    pruning = channel_pruning(groups, high=max_prune)
    layers = [
        n
        for n in weight_layers(model)
        if n not in exclude and (quantizable is None or n in quantizable)
    ]
    return Joint(
        KnobSpace(pruning.knob_list, tuple(skipped)), precision(layers), fixed("finetune", finetune)
    )
