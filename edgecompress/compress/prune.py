"""Structured (channel/neuron) pruning with torch-pruning's dependency graph.

Coupled layers (batch norm, the next layer's inputs, residual additions, concatenations,
depthwise convolutions) stay consistent, and channels are physically removed: the pruned model
is smaller and faster in any dense runtime.

Plan entries read here:

- ``prune.<group>``: the fraction of the group's output channels removed (0 = untouched);
- ``method.prune_criterion``: how channels are ranked, summed over every weight of the coupled
  group: ``l1`` / ``l2`` (magnitude), ``taylor`` (first-order |w * dL/dw| on a few training
  batches), ``bn_scale`` (the batch norm scale, network slimming), ``fpgm`` (distance to the
  geometric median), ``random`` (the baseline), ``slimming`` (``bn_scale`` after the pipeline
  has trained with an L1 penalty on the batch norm scales). ``bn_scale`` on a group without
  batch norm falls back to ``l1``, recorded in ``fallbacks``;
- ``method.round_to``: the channels kept are a multiple of this (runtimes prefer aligned widths).
  A group that holds the embedding of multi-head attention keeps a multiple of its heads, and
  loses the same number of channels from each head (the head dimension is pruned, each channel
  stays in its head; ``nn.MultiheadAttention`` cannot lose whole heads). The query, key and
  value projections of Hugging Face-style attention (a module with ``num_attention_heads`` and
  ``attention_head_size``: BERT, RoBERTa, ViT, ...) lose whole heads instead, the heads whose
  channels score lowest together; the module's head count is updated, and its reshape into heads
  of the same size keeps working.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from edgecompress.compress.candidate import Report
from edgecompress.inputs import call
from edgecompress.modules import dependency_graph
from edgecompress.plan import InvalidPlan, Plan

Batches = Callable[[], Iterable[tuple[Any, torch.Tensor]]]  # (inputs of any form, targets)
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> loss
CRITERIA = ("l1", "l2", "taylor", "bn_scale", "slimming", "fpgm", "random")
TAYLOR_BATCHES = 4
# the names Hugging Face gives the projections whose outputs are split into heads (an output
# projection that is a child of the same module is not one of them)
PROJECTIONS = frozenset({"query", "key", "value", "q_proj", "k_proj", "v_proj", "q", "k", "v"})


class ChannelPruner:
    """``apply(model, plan)`` removes ``prune.<group>`` of each group's output channels; its
    report: ``criterion_fallbacks``, the groups the plan's criterion could not rank (and how
    they were ranked instead), when there are any.

    ``batches`` yields ``(inputs, targets)`` training batches; only the ``taylor`` criterion
    uses them (the first few), with ``loss`` (the task's; default cross-entropy on labels).
    ``seed`` fixes the ``random`` criterion.
    """

    def __init__(
        self,
        example_input: Any,
        *,
        batches: Batches | None = None,
        seed: int = 0,
        loss: Loss = nn.functional.cross_entropy,
    ) -> None:
        self.example_input = example_input
        self.batches = batches
        self.seed = seed
        self.loss = loss

    def apply(self, model: nn.Module, plan: Plan) -> tuple[nn.Module, Report]:
        ratios = plan.numbers("prune")
        criterion, round_to = _settings(plan)
        model = copy.deepcopy(model).eval()
        fallbacks: list[str] = []
        if not any(ratios.values()):
            return model, {}
        modules = dict(model.named_modules())
        unknown = [name for name in ratios if name not in modules]
        if unknown:
            raise InvalidPlan(f"prune: the model has no layers {unknown}")
        bad = {k: r for k, r in ratios.items() if not 0.0 <= r < 1.0}
        if bad:
            raise InvalidPlan(f"prune: ratios must lie in [0, 1), got {bad}")
        graph = dependency_graph(model, self.example_input)
        if criterion == "taylor":
            self._accumulate_gradients(model)
        generator = torch.Generator().manual_seed(self.seed)
        attention = _head_owners(model)
        for name, ratio in ratios.items():
            scorer = _Scorer(criterion, generator, name, fallbacks)
            _prune_group(graph, modules[name], name, ratio, round_to, scorer, attention)
        model.zero_grad(set_to_none=True)
        return model.eval(), {"criterion_fallbacks": fallbacks} if fallbacks else {}

    def _accumulate_gradients(self, model: nn.Module) -> None:
        if self.batches is None:
            raise InvalidPlan(
                "prune: the taylor criterion needs training batches; build the ChannelPruner "
                "with batches=... or choose another method.prune_criterion"
            )
        model.eval()  # batch norm statistics stay as trained; only gradients are collected
        model.zero_grad(set_to_none=True)
        for i, (x, y) in enumerate(self.batches()):
            if i == TAYLOR_BATCHES:
                break
            self.loss(call(model, x), y).backward()


def _settings(plan: Plan) -> tuple[str, int]:
    criterion = str(plan.get("method.prune_criterion", "l1"))
    if criterion not in CRITERIA:
        raise InvalidPlan(f"method.prune_criterion {criterion!r}: choose one of {CRITERIA}")
    round_to = plan.get("method.round_to", 1)
    if not isinstance(round_to, int) or isinstance(round_to, bool) or round_to < 1:
        raise InvalidPlan(f"method.round_to must be a positive integer, got {round_to!r}")
    return criterion, round_to


class _Scorer:
    """The importance of every channel of a group under one criterion."""

    def __init__(
        self, criterion: str, generator: torch.Generator, layer: str, fallbacks: list[str]
    ) -> None:
        self.criterion = criterion
        self.generator = generator
        self.layer = layer
        self.fallbacks = fallbacks

    def __call__(self, group: tp.dependency.Group, channels: int) -> torch.Tensor:
        if self.criterion == "random":
            return torch.rand(channels, generator=self.generator)
        scores = _importance(self.criterion)(group)
        if scores is None and self.criterion in ("bn_scale", "slimming"):
            self.fallbacks.append(f"{self.layer}: no batch norm in its group, ranked by l1")
            scores = _importance("l1")(group)
        if scores is None:
            raise InvalidPlan(f"prune: criterion {self.criterion} cannot rank {self.layer}")
        return scores


def _importance(criterion: str) -> tp.importance.Importance:
    if criterion == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1, normalizer=None)
    if criterion == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2, normalizer=None)
    if criterion == "taylor":
        return tp.importance.GroupTaylorImportance(normalizer=None)
    if criterion in ("bn_scale", "slimming"):
        return tp.importance.BNScaleImportance(normalizer=None)
    return tp.importance.FPGMImportance(normalizer=None)


def kept_channels(channels: int, ratio: float, round_to: int) -> int:
    """Channels kept: ``channels * (1 - ratio)`` to the nearest multiple of ``round_to``.

    At least one multiple (or one channel), never more than there are.
    """
    keep = channels - min(int(round(channels * ratio)), channels - 1)
    if round_to > 1 and ratio > 0:
        keep = max(round_to, int(round(keep / round_to)) * round_to)
    return min(keep, channels)


def _heads(group: tp.dependency.Group) -> int:
    """The embedding width of attention must stay a multiple of its number of heads."""
    heads = [
        dep.target.module.num_heads
        for dep, _ in group
        if isinstance(dep.target.module, nn.MultiheadAttention)
    ]
    return math.lcm(*heads) if heads else 1


class _HeadOwner:
    """A Hugging Face-style attention module whose projections lose whole heads."""

    def __init__(self, module: Any) -> None:  # its head attributes are ints, not nn.Module's
        self.module = module
        self.head_size: int = module.attention_head_size

    def shrink(self, channels: int) -> None:
        heads = channels // self.head_size
        self.module.num_attention_heads = heads
        if hasattr(self.module, "all_head_size"):
            self.module.all_head_size = heads * self.head_size


def _head_owners(model: nn.Module) -> dict[nn.Module, _HeadOwner]:
    """The projections (child Linear layers named as in ``PROJECTIONS`` whose outputs are the
    heads) of every attention module with ``num_attention_heads`` and ``attention_head_size``,
    to their owner."""
    owners: dict[nn.Module, _HeadOwner] = {}
    for module in model.modules():
        heads = getattr(module, "num_attention_heads", None)
        size = getattr(module, "attention_head_size", None)
        if not isinstance(heads, int) or not isinstance(size, int) or heads < 1 or size < 1:
            continue
        owner = _HeadOwner(module)
        for name, child in module.named_children():
            projection = name in PROJECTIONS and isinstance(child, nn.Linear)
            if projection and child.out_features == heads * size:
                owners[child] = owner
    return owners


def least_important_heads(scores: torch.Tensor, remove: int, head_size: int) -> list[int]:
    """The channels of the ``remove // head_size`` heads whose channels score lowest in sum
    (heads are contiguous blocks of ``head_size`` channels)."""
    per_head = scores.view(-1, head_size).sum(dim=1)
    heads = torch.argsort(per_head, stable=True)[: remove // head_size].tolist()
    return sorted(h * head_size + i for h in heads for i in range(head_size))


def least_important(scores: torch.Tensor, remove: int, heads: int = 1) -> list[int]:
    """The ``remove`` lowest-scoring channels; with attention heads, the same number from
    each head, so every channel stays in its head (heads are contiguous blocks of channels)."""
    if heads == 1:
        return torch.argsort(scores, stable=True)[:remove].tolist()
    per_head = scores.view(heads, -1)
    width = per_head.shape[1]
    lowest = torch.argsort(per_head, dim=1, stable=True)[:, : remove // heads]
    offsets = torch.arange(heads).unsqueeze(1) * width
    return sorted((lowest + offsets).flatten().tolist())


def _prune_group(
    graph: tp.DependencyGraph,
    module: nn.Module,
    name: str,
    ratio: float,
    round_to: int,
    scorer: _Scorer,
    attention: dict[nn.Module, _HeadOwner],
) -> None:
    pruner = graph.get_pruner_of_module(module)
    if pruner is None or pruner.get_out_channels(module) is None:
        raise InvalidPlan(f"prune: {name} ({type(module).__name__}) has no prunable outputs")
    channels = int(pruner.get_out_channels(module))
    full = graph.get_pruning_group(module, pruner.prune_out_channels, idxs=list(range(channels)))
    owners = {id(o): o for dep, _ in full if (o := attention.get(dep.target.module))}
    sizes = {o.head_size for o in owners.values()}
    if len(sizes) > 1:
        raise InvalidPlan(f"prune: {name} is coupled to attention heads of sizes {sorted(sizes)}")
    # whole heads of head_size channels go, or the same number of channels from each head
    unit, pick = (sizes.pop(), least_important_heads) if sizes else (_heads(full), least_important)
    remove = channels - kept_channels(channels, ratio, math.lcm(round_to, unit))
    if remove <= 0:
        return
    idxs = pick(scorer(full, channels), remove, unit)
    group = graph.get_pruning_group(module, pruner.prune_out_channels, idxs=idxs)
    if not graph.check_pruning_group(group):
        raise InvalidPlan(
            f"prune: the group of {name} ({type(module).__name__}) cannot lose {remove} "
            f"of its {channels} channels"
        )
    group.prune()
    for owner in owners.values():
        owner.shrink(channels - remove)
