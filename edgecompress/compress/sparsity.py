"""Unstructured weight pruning: zeros inside dense weight tensors, chosen per ``sparsity.<layer>``.

Plan entries:

- ``sparsity.<layer>``: fraction in [0, 1) of the layer's weight entries set to zero. ``<layer>``
  is a dotted module path to a Linear/Conv1d/Conv2d, or to a container (e.g. the Sequential a
  low-rank factorization put in a layer's place), whose every Linear/Conv weight gets the setting.
- ``method.sparsity``: ``magnitude`` (default) zeroes each layer's smallest ``|w|``; ``l1`` selects
  the same way (its L1 penalty, :func:`l1_penalty`, is added during an earlier fine-tuning);
  ``random`` draws the positions from a generator seeded by the pruner's seed and the layer name;
  ``threshold`` zeroes ``|w| < t * std(w)`` (``t`` = ``method.sparsity_threshold``) in every layer
  whose value is > 0; ``global`` ranks the ``|w|`` of all enabled layers together and zeroes the
  share ``method.global_sparsity`` of them.

Exactly ``round(ratio * n)`` entries are zeroed per layer (ties are broken by index). Biases
are never pruned. The zeros are kept through fine-tuning by ``torch.nn.utils.prune`` masks;
:func:`finalize` bakes them in before export. Dense runtimes gain no speed from zeros: the gain
shows as compressed file size (``edgecompress.evaluators.compressed_size``).
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn.utils import prune

from edgecompress.compress.candidate import Report
from edgecompress.modules import weights_read_directly
from edgecompress.plan import InvalidPlan, Plan

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)
ONNX_WEIGHT_OPS = ("Conv", "Gemm", "MatMul")

Weights = dict[str, torch.Tensor]
Selector = Callable[[Weights, dict[str, float], Plan, int], Weights]


class UnstructuredPruner:
    """``apply(model, plan)`` returns a copy of ``model`` with ``weight`` masks registered, and
    its report: ``sparsity_masks``, the share of weights masked per layer (a container in the
    plan expanded to its layers)."""

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed

    def apply(self, model: nn.Module, plan: Plan) -> tuple[nn.Module, Report]:
        ratios = _ratios(plan)
        select = _selector(plan)
        model = copy.deepcopy(model)
        layers = _expand(model, ratios)
        enabled = {path: ratio for path, (_, ratio) in layers.items() if ratio > 0}
        weights = {path: _tensor(layers[path][0], "weight").detach() for path in enabled}
        masks = select(weights, enabled, plan, self.seed)
        for path, mask in masks.items():
            prune.custom_from_mask(layers[path][0], "weight", mask)
        shares = {path: round(1.0 - float(mask.float().mean()), 4) for path, mask in masks.items()}
        return model, {"sparsity_masks": shares} if shares else {}


def finalize(model: nn.Module) -> nn.Module:
    """Bake the masks into plain ``weight`` parameters, in place; idempotent."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return model


def l1_penalty(model: nn.Module, layers: list[str]) -> torch.Tensor:
    """Sum of ``|w|`` over the weights of ``layers`` (containers expanded); differentiable.

    A sum, as in the L1-regularization literature: each weight is pulled towards zero with the
    same force (the strength) whatever the size of its layer.
    """
    modules = _expand(model, dict.fromkeys(layers, 0.0))
    weights = [_live_weight(module) for module, _ in modules.values()]
    if not weights:
        return torch.zeros(())
    return torch.stack([w.abs().sum() for w in weights]).sum()


def weight_sparsity(model: nn.Module) -> dict[str, float]:
    """Share of zero weight entries of every Linear/Conv module, by module path."""
    return {
        path: _zero_share(_tensor(module, "weight"))
        for path, module in model.named_modules()
        if isinstance(module, PRUNABLE)
    }


def _zero_share(weight: torch.Tensor) -> float:
    return int((weight == 0).sum()) / weight.numel()


def onnx_weight_sparsity(model: onnx.ModelProto) -> dict[str, float]:
    """Share of zero weight entries of every Conv/Gemm/MatMul node, by node name.

    The weight is a float initializer, or an int8 initializer reaching the node through
    DequantizeLinear; an int8 entry is zero when it equals its zero point.
    """
    inits = {t.name: t for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    found: dict[str, float] = {}
    for node in model.graph.node:
        if node.op_type not in ONNX_WEIGHT_OPS or len(node.input) < 2:
            continue
        weight = node.input[1]
        if weight in inits:
            found[node.name] = float(np.mean(numpy_helper.to_array(inits[weight]) == 0))
        elif weight in producers and producers[weight].op_type == "DequantizeLinear":
            share = _dequantized_zeros(producers[weight], inits)
            if share is not None:
                found[node.name] = share
    return found


def _dequantized_zeros(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> float | None:
    if node.input[0] not in inits:
        return None
    values = numpy_helper.to_array(inits[node.input[0]]).astype(np.int64)
    zero_point = np.zeros((), np.int64)
    if len(node.input) > 2 and node.input[2] in inits:
        zero_point = numpy_helper.to_array(inits[node.input[2]]).astype(np.int64)
    if zero_point.ndim == 1 and values.ndim > 1:  # per-channel: broadcast along the axis
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * values.ndim
        shape[axis] = -1
        zero_point = zero_point.reshape(shape)
    return float(np.mean(values == zero_point))


def _ratios(plan: Plan) -> dict[str, float]:
    return {
        layer: _fraction(f"sparsity.{layer}", v) for layer, v in plan.section("sparsity").items()
    }


def _fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise InvalidPlan(f"{name}: give a fraction in [0, 1), got {value!r}")
    return float(value)


def _selector(plan: Plan) -> Selector:
    mode = plan.get("method.sparsity", "magnitude")
    if mode not in _SELECTORS:
        raise InvalidPlan(
            f"method.sparsity: unknown mode {mode!r}; give one of {sorted(_SELECTORS)}"
        )
    select = _SELECTORS[str(mode)]
    select({}, {}, plan, 0)  # with no weights, this only checks the mode's settings
    return select


def _expand(model: nn.Module, ratios: dict[str, float]) -> dict[str, tuple[nn.Module, float]]:
    """``{path: (Linear/Conv module, ratio)}``; a container gives every such module inside it."""
    modules = dict(model.named_modules())
    unknown = sorted(layer for layer in ratios if layer not in modules)
    if unknown:
        raise InvalidPlan(f"sparsity: the model has no layers {unknown}")
    found: dict[str, tuple[nn.Module, float]] = {}
    fixed = set(weights_read_directly(model))
    for layer, ratio in ratios.items():
        if layer in fixed:
            raise InvalidPlan(
                f"sparsity.{layer}: its parent reads the weight itself (attention or a fused "
                "transformer layer), so a mask would not reach it; leave it out of the plan"
            )
        inner = {
            p: m
            for p, m in modules[layer].named_modules(prefix=layer)
            if isinstance(m, PRUNABLE) and p not in fixed
        }
        if not inner:
            raise InvalidPlan(f"sparsity.{layer}: holds no Linear/Conv1d/Conv2d weight")
        twice = sorted(set(inner) & set(found))
        if twice:
            raise InvalidPlan(
                f"sparsity.{layer}: layers {twice} are already named by another entry"
            )
        found.update({p: (m, ratio) for p, m in inner.items()})
    return found


def _live_weight(module: nn.Module) -> torch.Tensor:
    """The masked weight computed now (``module.weight`` is refreshed only by a forward)."""
    if hasattr(module, "weight_orig"):
        return _tensor(module, "weight_orig") * _tensor(module, "weight_mask")
    return _tensor(module, "weight")


def _tensor(module: nn.Module, name: str) -> torch.Tensor:
    tensor: torch.Tensor = getattr(module, name)
    return tensor


def _keep_all_but(weight: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """A mask shaped like ``weight`` with zeros at the flat indices ``drop``."""
    mask = torch.ones(weight.numel(), dtype=weight.dtype, device=weight.device)
    mask[drop] = 0
    return mask.view_as(weight)


def _smallest(weight: torch.Tensor, ratio: float) -> torch.Tensor:
    count = round(ratio * weight.numel())
    return _keep_all_but(weight, torch.topk(weight.abs().flatten(), count, largest=False).indices)


def _magnitude(weights: Weights, ratios: dict[str, float], plan: Plan, seed: int) -> Weights:
    return {path: _smallest(w, ratios[path]) for path, w in weights.items()}


def _random(weights: Weights, ratios: dict[str, float], plan: Plan, seed: int) -> Weights:
    masks = {}
    for path, w in weights.items():
        generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{path}".encode()))
        drop = torch.randperm(w.numel(), generator=generator)[: round(ratios[path] * w.numel())]
        masks[path] = _keep_all_but(w, drop.to(w.device))
    return masks


def _threshold(weights: Weights, ratios: dict[str, float], plan: Plan, seed: int) -> Weights:
    t = plan.get("method.sparsity_threshold")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not t >= 0:
        raise InvalidPlan(
            f"method.sparsity_threshold: mode 'threshold' needs a float >= 0 (zeroes "
            f"|w| < t * std(w)), got {t!r}"
        )
    return {path: (w.abs() >= t * w.std()).to(w.dtype) for path, w in weights.items()}


def _global(weights: Weights, ratios: dict[str, float], plan: Plan, seed: int) -> Weights:
    share = plan.get("method.global_sparsity")
    if share is None:
        raise InvalidPlan("method.global_sparsity: mode 'global' needs a fraction in [0, 1)")
    share = _fraction("method.global_sparsity", share)
    if not weights:
        return {}
    flat = torch.cat([w.flatten() for w in weights.values()])
    mask = _smallest(flat, share)
    parts = mask.split([w.numel() for w in weights.values()])
    return {path: part.view_as(w) for (path, w), part in zip(weights.items(), parts, strict=True)}


_SELECTORS: dict[str, Selector] = {
    "magnitude": _magnitude,
    "l1": _magnitude,
    "random": _random,
    "threshold": _threshold,
    "global": _global,
}
