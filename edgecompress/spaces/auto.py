"""AutoSpace: the search space built from a model by introspection, one knob per layer/group."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from edgecompress.blocks import StudentFamily, find_stages
from edgecompress.modules import WEIGHT_LAYERS, weights_read_directly
from edgecompress.spaces.base import Knob, KnobSpace, Skipped, check_choices
from edgecompress.spaces.distill import distillation_knobs
from edgecompress.spaces.joint import Joint
from edgecompress.spaces.layers import (
    channel_groups,
    factorization_problem,
    output_layer,
    weight_layers,
)
from edgecompress.spaces.lowrank import DECOMPOSITIONS, low_rank
from edgecompress.spaces.precision import (
    CALIBRATION_SAMPLES,
    CALIBRATIONS,
    QUANT_METHODS,
    ROUNDINGS,
    precision,
    quantization_methods,
    widths,
)
from edgecompress.spaces.pruning import CRITERIA, ROUND_TO, channel_pruning
from edgecompress.spaces.sparsity import MODES, l1_strength, unstructured
from edgecompress.spaces.student import derived_student_space, family_space
from edgecompress.targets import Target

TECHNIQUES = ("prune", "sparsity", "rank", "bits", "student", "distill")
DISTILLATION = ("temperature", "kd_weight", "kd_mode", "hint_weight")
STEP = 0.05  # the grid of every ratio and share knob


def _needs_l1_strength(spaces: list[KnobSpace]) -> bool:
    """Slimming needs ``method.l1_strength``; the sparsity space adds it itself for ``l1``."""
    knobs = {k.name: k for s in spaces for k in s.knobs()}
    criterion = knobs.get("method.prune_criterion")
    slimming = criterion is not None and "slimming" in (*criterion.choices, criterion.value)
    return slimming and "method.l1_strength" not in knobs


def unsupported_layers(model: nn.Module) -> list[Skipped]:
    """Layers with weights of a kind no technique here compresses (Conv3d, an embedding, an
    LSTM, ...): reported, never a crash. Normalization layers follow the layers they scale."""
    handled = WEIGHT_LAYERS + (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
    found = []
    for name, module in model.named_modules():
        own = any(True for _ in module.parameters(recurse=False))
        if name and own and not isinstance(module, handled):
            kind = type(module).__name__
            if isinstance(module, nn.MultiheadAttention):
                reason = "attention projections: narrowed with the embedding width only"
            elif isinstance(module, nn.Embedding):
                reason = (
                    "embedding table: not quantized or factorized; its width is narrowed only "
                    "with the channel group it feeds, where that group is a knob"
                )
            else:
                reason = f"{kind} layers are not compressed (Conv1d, Conv2d and Linear are)"
            found.append(Skipped(name, reason))
    return found


@dataclass(frozen=True, kw_only=True)
class AutoSpace:
    """What to search, for any model: the constructor is the configuration.

    ``techniques`` chooses among structured pruning (``prune``), unstructured sparsity
    (``sparsity``), low-rank factorization (``rank``), per-layer precision and how int8 is made
    (``bits``: the widths the target runs, ``quant_methods``, ``calibrations``,
    ``calibration_samples``, ``roundings``), students (``student``: depth and width per stage of
    the teacher, from ``student_min_width``; and the experiment's student family, if any) and
    the distillation losses (``distill``: ``temperatures``, ``kd_modes``, ``hint_weights``);
    ``None`` (the default) takes every technique that can pay off under the experiment's
    objectives: sparsity only when a size (``size_mb``, ``size_gz_mb``) is one, since dense
    runtimes gain no speed from zeros.
    ``stages`` ties consecutive layers to one knob per stage (a coarser, faster search for deep
    models); ``None`` gives one knob per layer or coupled group. The first and last weight
    layers get no sparsity or rank knob unless ``keep_first_last`` is False; the output layer's
    channels are never pruned. ``epochs`` = (low, high) makes fine-tuning epochs a knob.
    """

    techniques: tuple[str, ...] | None = None
    criteria: tuple[str, ...] = tuple(c for c in CRITERIA if c != "random")
    round_to: tuple[int, ...] = ROUND_TO
    max_prune: float = 0.95  # as far as a hand sweep goes (issue 13: 0.9 stopped short of it)
    sparsity_modes: tuple[str, ...] = tuple(m for m in MODES if m != "random")
    max_sparsity: float = 0.95
    min_rank_share: float = 0.1
    decompositions: tuple[str, ...] = DECOMPOSITIONS
    stages: int | None = None
    keep_first_last: bool = True
    epochs: tuple[int, int] | None = None
    quant_methods: tuple[str, ...] = QUANT_METHODS
    calibrations: tuple[str, ...] = CALIBRATIONS
    calibration_samples: tuple[int, ...] = CALIBRATION_SAMPLES
    roundings: tuple[str, ...] = ROUNDINGS
    student_min_width: float = 0.25
    temperatures: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    kd_modes: tuple[str, ...] = ("soft", "hard")
    hint_weights: tuple[float, ...] = (0.0, 0.1, 1.0)

    def __post_init__(self) -> None:
        if self.techniques is not None:
            check_choices("AutoSpace.techniques", self.techniques, TECHNIQUES)
        for name, low, high in (
            ("max_prune", 0.0, self.max_prune),
            ("max_sparsity", 0.0, self.max_sparsity),
            ("min_rank_share", self.min_rank_share, 1.0),
            ("student_min_width", self.student_min_width, 1.0),
        ):
            steps = (high - low) / STEP
            if abs(steps - round(steps)) > 1e-9:
                raise ValueError(
                    f"AutoSpace.{name}={getattr(self, name)} is off the {STEP} grid of its knob; "
                    f"use a multiple of {STEP} (e.g. {round(round(steps) * STEP, 2) or STEP})"
                )
        if self.epochs is not None and not 0 <= self.epochs[0] <= self.epochs[1]:
            raise ValueError(
                f"AutoSpace.epochs must be (low, high), 0 <= low <= high: {self.epochs}"
            )

    def build(
        self,
        model: nn.Module,
        example_input: Any,
        *,
        finetune: object,
        exclude: tuple[str, ...] = (),
        quantizable: list[str] | None = None,
        objectives: tuple[str, ...] = ("accuracy", "latency_ms"),
        target: Target | None = None,
        student: StudentFamily | None = None,
        distillation: tuple[str, ...] = ("temperature", "kd_weight", "kd_mode", "hint_weight"),
    ) -> Joint:
        """The space for ``model``; ``quantizable``: the layers with an ONNX node of their own;
        ``target``: the device (its precisions); ``student``: the experiment's student family;
        ``distillation``: the fine-tune settings the task's distillation reads."""
        techniques = self.chosen(objectives)
        modules = dict(model.named_modules())
        missing = [n for n in exclude if n not in modules]
        if missing:
            raise ValueError(f"exclude names layers the model does not have: {missing}")
        layers = weight_layers(model)
        if not layers:
            raise ValueError("the model has no Conv1d, Conv2d or Linear layer to compress")
        alone = {n: "excluded by the experiment" for n in exclude}
        spaces = []
        if "prune" in techniques:
            spaces.append(self._pruning(model, example_input, exclude))
        if "sparsity" in techniques:
            spaces.append(self._sparsity(model, layers, alone))
        if "rank" in techniques:
            spaces.append(self._low_rank(model, layers, alone))
        if "bits" in techniques:
            spaces.append(self._precision(model, layers, alone, quantizable, target or Target()))
            spaces.append(self._quantization())
        if "student" in techniques:
            stages = find_stages(model, example_input)
            spaces.append(
                derived_student_space(stages, min_width=self.student_min_width, exclude=exclude)
            )
            if student is not None:
                spaces.append(family_space(student))
        if _needs_l1_strength(spaces):
            spaces.append(KnobSpace((l1_strength(),)))
        if "distill" in techniques:
            spaces.append(
                distillation_knobs(
                    finetune,  # type: ignore[arg-type]
                    temperatures=self.temperatures,
                    modes=self.kd_modes,
                    hint_weights=self.hint_weights,
                    reads=distillation,
                )
            )
        searched = distillation if "distill" in techniques else ()
        spaces.append(self._finetune(finetune, searched=tuple(searched)))
        spaces.append(KnobSpace((), tuple(unsupported_layers(model))))
        return Joint(*spaces)

    def _pruning(
        self, model: nn.Module, example: torch.Tensor, exclude: tuple[str, ...]
    ) -> KnobSpace:
        last = output_layer(model)
        try:
            groups, skipped = channel_groups(model, example, exclude=tuple(exclude) + (last,))
        except Exception as exc:  # noqa: BLE001 - torch-pruning cannot trace every model
            reason = f"torch-pruning cannot trace the model ({type(exc).__name__}: {exc})"[:300]
            layers = [Skipped(n, reason, "prune") for n in weight_layers(model)]
            return KnobSpace((), tuple(layers))
        notes = [Skipped(last, "output layer: its channels are the model's outputs", "prune")]
        notes += [Skipped(s.layer, s.reason, "prune") for s in skipped if s.layer != last]
        return channel_pruning(
            groups,
            high=self.max_prune,
            criteria=self.criteria,
            round_to=self.round_to,
            stages=self.stages,
            skipped=tuple(notes),
        )

    def chosen(self, objectives: tuple[str, ...]) -> tuple[str, ...]:
        """The techniques searched under ``objectives``."""
        if self.techniques is not None:
            return self.techniques
        sized = any(o in ("size_mb", "size_gz_mb") for o in objectives)
        return tuple(t for t in TECHNIQUES if sized or t != "sparsity")

    def _edges(self, layers: list[str], alone: dict[str, str]) -> dict[str, str]:
        alone = dict(alone)
        if self.keep_first_last:
            alone.setdefault(layers[0], "first layer: left alone (keep_first_last=True)")
            alone.setdefault(layers[-1], "last layer: left alone (keep_first_last=True)")
        return alone

    def _sparsity(self, model: nn.Module, layers: list[str], alone: dict[str, str]) -> KnobSpace:
        alone = self._edges(layers, alone)
        for name in weights_read_directly(model):
            alone.setdefault(name, "its parent reads the weight itself (attention, fused layer)")
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
            alone.setdefault(name, "its parent reads the weight itself (attention, fused layer)")
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
        self,
        model: nn.Module,
        layers: list[str],
        alone: dict[str, str],
        quantizable: list[str] | None,
        target: Target,
    ) -> KnobSpace:
        modules = dict(model.named_modules())
        skipped = [Skipped(n, r, "bits") for n, r in alone.items()]
        chosen = {}
        for n in layers:
            if n in alone:
                continue
            if quantizable is not None and n not in quantizable:
                skipped.append(Skipped(n, "no ONNX node of its own to quantize", "bits"))
                continue
            linear = isinstance(modules[n], nn.Linear)
            chosen[n] = widths(
                linear=linear, precisions=target.precisions, emulated=target.emulated_bits
            )
        return KnobSpace(precision(chosen).knob_list, tuple(skipped))

    def _quantization(self) -> KnobSpace:
        return quantization_methods(
            methods=self.quant_methods,
            calibrations=self.calibrations,
            samples=self.calibration_samples,
            roundings=self.roundings,
        )

    def _finetune(self, settings: object, *, searched: tuple[str, ...]) -> KnobSpace:
        knobs = []
        for f in fields(settings):  # type: ignore[arg-type]
            name, value = f"finetune.{f.name}", getattr(settings, f.name)
            if f.name in DISTILLATION and f.name in searched:
                continue  # a knob of the distillation space
            if f.name == "epochs" and self.epochs is not None:
                low, high = self.epochs
                knobs.append(Knob(name=name, kind="int", low=low, high=high, step=1, identity=low))
            else:
                knobs.append(Knob(name=name, kind="fixed", value=value))
        return KnobSpace(tuple(knobs))
