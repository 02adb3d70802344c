"""Finds the layers of a model that can be pruned or quantized, and the ones that cannot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from edgecompress.modules import WEIGHT_LAYERS, dependency_graph, weights_read_directly
from edgecompress.spaces.base import Skipped


@dataclass(frozen=True)
class ChannelGroup:
    """Output channels that must be pruned together; named after the first (root) layer."""

    name: str
    layers: tuple[str, ...]
    channels: int


def weight_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def output_layer(model: nn.Module) -> str:
    """The last weight layer: its outputs are the model's outputs, never pruned by default."""
    names = weight_layers(model)
    if not names:
        raise ValueError("the model has no Conv1d, Conv2d or Linear layer to compress")
    return names[-1]


def channel_groups(
    model: nn.Module, example_input: Any, exclude: tuple[str, ...]
) -> tuple[list[ChannelGroup], list[Skipped]]:
    """Coupled output-channel groups (torch-pruning's dependency graph), in model order."""
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    skipped = [Skipped(n, "excluded by the experiment") for n in exclude if n in modules]
    missing = [n for n in exclude if n not in modules]
    if missing:
        raise ValueError(f"exclude names layers the model does not have: {missing}")
    ignored = [modules[n] for n in exclude]
    graph = dependency_graph(model, example_input)
    order = {n: i for i, n in enumerate(modules)}
    groups = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=WEIGHT_LAYERS):
        coupled = [
            names[dep.target.module]
            for dep, _ in group
            if graph.is_out_channel_pruning_fn(dep.handler) and dep.target.module in names
        ]
        root = min(coupled, key=lambda n: order[n])  # named after its first layer
        channels = graph.get_out_channels(modules[root])
        groups.append(ChannelGroup(root, tuple(dict.fromkeys(coupled)), int(channels)))
    covered = {layer for g in groups for layer in g.layers}
    read_directly = weights_read_directly(model)
    for name in weight_layers(model):
        if name in read_directly and name not in covered:  # a group's knob narrows it anyway
            reason = (
                "its parent (attention, a fused transformer layer) reads the weight itself: "
                "narrowed only with the embedding width, if at all"
            )
            skipped.append(Skipped(name, reason))
        elif name not in covered and name not in exclude:
            skipped.append(Skipped(name, "its output channels are coupled to an excluded layer"))
    groups.sort(key=lambda g: order[g.name])
    return groups, skipped


def factorization_problem(module: nn.Module) -> str | None:
    """Why a low-rank factorization of ``module`` is not possible or cannot save anything."""
    if type(module) not in WEIGHT_LAYERS:  # a subclass's parent may read its weight itself
        return f"{type(module).__name__} has no low-rank form here (only exact Linear/Conv)"
    if isinstance(module, nn.Linear):
        if min(module.in_features, module.out_features) < 2:
            return "rank 1 already: a factorization cannot save multiply-adds"
        return None
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if module.groups != 1:
            return f"grouped convolution (groups={module.groups}): no low-rank form"
        if min(module.in_channels, module.out_channels) < 2:
            return "a single input or output channel: a factorization cannot save multiply-adds"
    return None
