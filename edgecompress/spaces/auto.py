"""AutoSpace: the search space built from a model by introspection, one knob per layer/group."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from edgecompress.spaces.base import Knob, KnobSpace, Skipped
from edgecompress.spaces.joint import Joint
from edgecompress.spaces.layers import (
    channel_groups,
    factorization_problem,
    output_layer,
    weight_layers,
    weights_read_directly,
)
from edgecompress.spaces.lowrank import DECOMPOSITIONS, low_rank
from edgecompress.spaces.precision import precision
from edgecompress.spaces.pruning import CRITERIA, ROUND_TO, channel_pruning
from edgecompress.spaces.sparsity import MODES, l1_strength, unstructured

TECHNIQUES = ("prune", "sparsity", "rank", "bits")


@dataclass(frozen=True, kw_only=True)
class AutoSpace:
    """What to search, for any model: the constructor is the configuration.

    ``techniques`` chooses among structured pruning (``prune``), unstructured sparsity
    (``sparsity``), low-rank factorization (``rank``) and per-layer precision (``bits``).
    ``stages`` ties consecutive layers to one knob per stage (a coarser, faster search for deep
    models); ``None`` gives one knob per layer or coupled group. The first and last weight
    layers get no sparsity or rank knob unless ``keep_first_last`` is False; the output layer's
    channels are never pruned. ``epochs`` = (low, high) makes fine-tuning epochs a knob.
    """

    techniques: tuple[str, ...] = TECHNIQUES
    criteria: tuple[str, ...] = tuple(c for c in CRITERIA if c != "random")
    round_to: tuple[int, ...] = ROUND_TO
    max_prune: float = 0.9
    sparsity_modes: tuple[str, ...] = tuple(m for m in MODES if m != "random")
    max_sparsity: float = 0.95
    min_rank_share: float = 0.1
    decompositions: tuple[str, ...] = DECOMPOSITIONS
    stages: int | None = None
    keep_first_last: bool = True
    epochs: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.techniques) - set(TECHNIQUES))
        if unknown:
            raise ValueError(f"AutoSpace.techniques {unknown}: choose among {TECHNIQUES}")
        if self.epochs is not None and not 0 <= self.epochs[0] <= self.epochs[1]:
            raise ValueError(
                f"AutoSpace.epochs must be (low, high), 0 <= low <= high: {self.epochs}"
            )

    def build(
        self,
        model: nn.Module,
        example_input: torch.Tensor,
        *,
        finetune: object,
        exclude: tuple[str, ...] = (),
        quantizable: list[str] | None = None,
    ) -> Joint:
        """The space for ``model``; ``quantizable``: the layers with an ONNX node of their own."""
        modules = dict(model.named_modules())
        missing = [n for n in exclude if n not in modules]
        if missing:
            raise ValueError(f"exclude names layers the model does not have: {missing}")
        layers = weight_layers(model)
        if not layers:
            raise ValueError("the model has no Conv1d, Conv2d or Linear layer to compress")
        alone = {n: "excluded by the experiment" for n in exclude}
        spaces = []
        if "prune" in self.techniques:
            spaces.append(self._pruning(model, example_input, exclude))
        if "sparsity" in self.techniques:
            spaces.append(self._sparsity(model, layers, alone))
        if "rank" in self.techniques:
            spaces.append(self._low_rank(model, layers, alone))
        if "bits" in self.techniques:
            spaces.append(self._precision(layers, alone, quantizable))
        spaces.append(self._finetune(finetune))
        return Joint(*spaces)

    def _pruning(
        self, model: nn.Module, example: torch.Tensor, exclude: tuple[str, ...]
    ) -> KnobSpace:
        last = output_layer(model)
        groups, skipped = channel_groups(model, example, exclude=tuple(exclude) + (last,))
        notes = [Skipped(last, "output layer: its channels are the model's outputs", "prune")]
        notes += [Skipped(s.layer, s.reason, "prune") for s in skipped if s.layer != last]
        space = channel_pruning(
            groups,
            high=self.max_prune,
            criteria=self.criteria,
            round_to=self.round_to,
            stages=self.stages,
            skipped=tuple(notes),
        )
        if "slimming" in self.criteria and not self._uses_l1():
            return KnobSpace(space.knob_list + (l1_strength(),), space.skipped)
        return space

    def _uses_l1(self) -> bool:
        return "sparsity" in self.techniques and "l1" in self.sparsity_modes

    def _edges(self, layers: list[str], alone: dict[str, str]) -> dict[str, str]:
        alone = dict(alone)
        if self.keep_first_last:
            alone.setdefault(layers[0], "first layer: left alone (keep_first_last=True)")
            alone.setdefault(layers[-1], "last layer: left alone (keep_first_last=True)")
        return alone

    def _sparsity(self, model: nn.Module, layers: list[str], alone: dict[str, str]) -> KnobSpace:
        alone = self._edges(layers, alone)
        for name in weights_read_directly(model):
            alone.setdefault(name, "its parent reads the weight directly (multi-head attention)")
        chosen = [n for n in layers if n not in alone]
        skipped = tuple(Skipped(n, r, "sparsity") for n, r in alone.items())
        return unstructured(
            chosen,
            modes=self.sparsity_modes,
            high=self.max_sparsity,
            stages=self.stages,
            skipped=skipped,
        )

    def _low_rank(self, model: nn.Module, layers: list[str], alone: dict[str, str]) -> KnobSpace:
        modules = dict(model.named_modules())
        alone = self._edges(layers, alone)
        for name in weights_read_directly(model):
            alone.setdefault(name, "its parent reads the weight directly (multi-head attention)")
        for name in layers:
            problem = factorization_problem(modules[name])
            if problem is not None:
                alone.setdefault(name, problem)
        chosen = [n for n in layers if n not in alone]
        spatial = any(
            isinstance(modules[n], nn.Conv2d) and min(modules[n].kernel_size) > 1 for n in chosen
        )
        kinds = self.decompositions if spatial else ("tucker2",)
        return low_rank(
            chosen,
            low=self.min_rank_share,
            decompositions=kinds,
            stages=self.stages,
            skipped=tuple(Skipped(n, r, "rank") for n, r in alone.items()),
        )

    def _precision(
        self, layers: list[str], alone: dict[str, str], quantizable: list[str] | None
    ) -> KnobSpace:
        skipped = [Skipped(n, r, "bits") for n, r in alone.items()]
        chosen = []
        for n in layers:
            if n in alone:
                continue
            if quantizable is not None and n not in quantizable:
                skipped.append(Skipped(n, "no ONNX node of its own to quantize", "bits"))
                continue
            chosen.append(n)
        return KnobSpace(precision(chosen).knob_list, tuple(skipped))

    def _finetune(self, settings: object) -> KnobSpace:
        knobs = []
        for f in fields(settings):  # type: ignore[arg-type]
            name, value = f"finetune.{f.name}", getattr(settings, f.name)
            if f.name == "epochs" and self.epochs is not None:
                low, high = self.epochs
                knobs.append(Knob(name=name, kind="int", low=low, high=high, step=1, identity=low))
            else:
                knobs.append(Knob(name=name, kind="fixed", value=value))
        return KnobSpace(tuple(knobs))
