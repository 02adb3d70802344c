"""Structured channel pruning with torch-pruning's dependency graph.

Coupled layers (batch norm, the next layer's inputs, residual additions) stay consistent.

Channels are physically removed: the pruned model is smaller and faster in any dense runtime.
Channels are ranked by the L1 norm of the whole coupled group (every weight the channel touches).
"""

from __future__ import annotations

import copy

import torch
import torch_pruning as tp
from torch import nn

from edgecompress.plan import InvalidPlan, Plan


class ChannelPruner:
    """``apply(model, plan)`` removes ``prune.<group>`` of each group's output channels."""

    def __init__(self, example_input: torch.Tensor) -> None:
        self.example_input = example_input

    def apply(self, model: nn.Module, plan: Plan) -> nn.Module:
        ratios = {k: float(v) for k, v in plan.section("prune").items()}
        model = copy.deepcopy(model).eval()
        if not any(ratios.values()):
            return model
        modules = dict(model.named_modules())
        unknown = [name for name in ratios if name not in modules]
        if unknown:
            raise InvalidPlan(f"prune: the model has no layers {unknown}")
        bad = {k: r for k, r in ratios.items() if not 0.0 <= r < 1.0}
        if bad:
            raise InvalidPlan(f"prune: ratios must lie in [0, 1), got {bad}")
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=self.example_input)
        importance = tp.importance.GroupMagnitudeImportance(p=1, normalizer=None)
        for name, ratio in ratios.items():
            _prune_group(graph, modules[name], ratio, importance)
        return model


def _prune_group(
    graph: tp.DependencyGraph, module: nn.Module, ratio: float, importance: tp.importance.Importance
) -> None:
    pruner = graph.get_pruner_of_module(module)
    if pruner is None or pruner.get_out_channels(module) is None:
        raise InvalidPlan(f"prune: {type(module).__name__} has no prunable output channels")
    channels = int(pruner.get_out_channels(module))
    remove = min(int(round(channels * ratio)), channels - 1)
    if remove <= 0:
        return
    full = graph.get_pruning_group(module, pruner.prune_out_channels, idxs=list(range(channels)))
    scores = importance(full)
    idxs = torch.argsort(scores)[:remove].tolist()
    group = graph.get_pruning_group(module, pruner.prune_out_channels, idxs=idxs)
    if not graph.check_pruning_group(group):
        raise InvalidPlan(
            f"prune: the group of {type(module).__name__} cannot lose {remove} "
            f"of its {channels} channels"
        )
    group.prune()
