"""compress(): apply a whole plan, one technique after another, and export the result.

    teacher -> [student: fewer or narrower blocks, or a member of the user's family] ->
    [L1 on batch norm scales, for slimming] -> channel pruning -> low-rank
    factorization -> [L1 penalty on weights] -> unstructured sparsity -> fine-tuning with the
    teacher (zeros held by masks; emulated and QAT layers fake-quantized) -> rounding of
    quantized weights -> ONNX export -> per-layer precision (int4, int8, fp16, fp32)

Channel pruning comes before factorization: its groups are found on the original graph, and a
factorized layer is then cut to the pruned widths. Any structural change is followed by
fine-tuning with the teacher; a plan that only quantizes is post-training quantization.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecompress.compress.candidate import Candidate
from edgecompress.compress.lowrank import LowRankFactorizer
from edgecompress.compress.onnx_export import export_onnx
from edgecompress.compress.prune import ChannelPruner
from edgecompress.compress.quantize import (
    OnnxQuantizer,
    QuantRecipe,
    check_target,
    fake_quant_training,
    linear_layers,
    recipe,
    round_weights,
)
from edgecompress.compress.sparsity import (
    UnstructuredPruner,
    finalize,
    l1_penalty,
    weight_sparsity,
)
from edgecompress.compress.student import StudentBuilder, drop_missing
from edgecompress.experiment import Experiment
from edgecompress.inputs import call, take, to_torch
from edgecompress.plan import InvalidPlan, Plan
from edgecompress.tasks import FinetuneSettings, SupervisedTask, hint_pairs

Gate = Callable[[], AbstractContextManager[Any]]
METHODS = (
    "prune_criterion",
    "round_to",
    "decomposition",
    "sparsity",
    "sparsity_threshold",
    "global_sparsity",
    "l1_strength",
    "quant",
    "calibration",
    "calibration_samples",
    "rounding",
)


def check_sections(plan: Plan) -> None:
    """Entries no step reads would be silently ignored: refused instead."""
    unknown = sorted(set(plan.section("method")) - set(METHODS))
    if unknown:
        raise InvalidPlan(f"method: unknown settings {unknown}; known: {list(METHODS)}")


def finetune_settings(plan: Plan, default: FinetuneSettings) -> FinetuneSettings:
    given = plan.section("finetune")
    known = {f.name for f in fields(FinetuneSettings)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise InvalidPlan(f"finetune: unknown settings {unknown}; known: {sorted(known)}")
    values = {f.name: given.get(f.name, getattr(default, f.name)) for f in fields(default)}
    try:
        return FinetuneSettings(**values)
    except (TypeError, ValueError) as exc:
        raise InvalidPlan(f"finetune: {exc}") from None


def check_finite(model: nn.Module, task: SupervisedTask, samples: int = 64) -> None:
    """The compressed model's outputs on the first training inputs are finite numbers: one
    that outputs NaN or inf is refused here with the reason (it scored a meaningless metric with
    nothing said, or failed in int8 calibration with ONNX Runtime's "scale issue")."""
    x, _ = task.arrays("train")
    with torch.no_grad():
        out = call(model.eval(), to_torch(take(x, 0, samples)))
    bad = int((~torch.isfinite(out)).reshape(len(out), -1).any(1).sum())
    if bad:
        raise InvalidPlan(
            f"the compressed model outputs NaN or inf on {bad} of {len(out)} training inputs "
            "(after fine-tuning, if the plan fine-tunes): the fine-tune diverged or the plan "
            "broke the model. Lower the learning rate (FinetuneSettings.lr) or the compression."
        )


def check_output_shape(student: nn.Module, teacher: nn.Module, task: SupervisedTask) -> None:
    """The compressed model gives outputs of the teacher's shape on a training input: a plan
    that narrowed a channel group the model's output is made of (an output head that is not the
    model's last weight layer, an embedding the model returns) is refused here, before any
    fine-tuning, instead of being scored on outputs of another size (an argmax over fewer
    classes: a meaningless accuracy, with nothing said)."""
    x, _ = task.arrays("train")
    one = to_torch(take(x, 0, 1))
    with torch.no_grad():
        want, got = _shapes(call(teacher.eval(), one)), _shapes(call(student.eval(), one))
    if want != got:
        raise InvalidPlan(
            f"the compressed model's outputs have shape {got}, the teacher's {want}: the plan "
            "narrowed channels the model's output is made of. Exclude the layer that produces "
            "the output (Experiment.exclude)."
        )


def _shapes(out: Any) -> Any:
    """The shapes in a model's output (a tensor, or tuples, lists and dicts of them)."""
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, (tuple, list)):
        return tuple(_shapes(o) for o in out)
    if isinstance(out, dict):
        return {k: _shapes(v) for k, v in out.items()}
    return type(out).__name__


def calibration_source(experiment: Experiment) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
    """The task's calibration batches as ``{ONNX input name: array}`` feeds."""
    names = experiment.inputs.named
    return lambda: (names(batch) for batch in experiment.task.calibration_batches())


def l1_strength(plan: Plan) -> float:
    value = plan.get("method.l1_strength", 1e-5)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InvalidPlan(f"method.l1_strength must be a number >= 0, got {value!r}")
    return float(value)


def training_batches(task: SupervisedTask, size: int = 64) -> Iterator[tuple[Any, Any]]:
    """The training split in a fixed order (for criteria that need gradients)."""
    x, y = task.arrays("train")
    for start in range(0, len(y), size):
        yield to_torch(take(x, start, start + size)), torch.from_numpy(y[start : start + size])


def bn_scale_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of |gamma| over every batch norm: drives channels to zero scale (network slimming)."""
    scales = [
        m.weight
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None
    ]
    if not scales:
        return torch.zeros(())
    return torch.stack([s.abs().sum() for s in scales]).sum()


class _Steps:
    """The state of one compression: the student so far, settings, and notes."""

    def __init__(self, experiment: Experiment, plan: Plan, gate: Gate) -> None:
        self.experiment = experiment
        self.plan = plan
        self.gate = gate
        self.settings = finetune_settings(plan, experiment.task.finetune)
        self.notes: dict[str, Any] = {}
        with gate():
            self.teacher = experiment.model().eval()
            self.student: nn.Module = copy.deepcopy(self.teacher)  # the teacher stays as it is
        self.changed = False
        self.quantization()  # a precision plan that cannot be built is refused before any work

    def quantization(self) -> QuantRecipe:
        """The plan's quantization recipe on the model as it is now, checked: layers it names
        exist, the target runs their precisions."""
        quant = recipe(
            self.plan,
            linear_layers(self.student),
            int4="int4" in self.experiment.target.precisions,
        )
        modules = dict(self.student.named_modules())
        unknown = sorted(layer for layer in quant.precisions if layer not in modules)
        if unknown:
            raise InvalidPlan(f"bits: the model has no layers {unknown}")
        check_target(quant, self.experiment.target)
        return quant

    def distill_student(self) -> None:
        """A student (derived from the teacher, or a member of the experiment's family) replaces
        the copy of the teacher; plan entries for layers it no longer has are left out."""
        builder = StudentBuilder(
            self.experiment.example_input,
            family=self.experiment.student,
            seed=self.experiment.seed,
        )
        with self.gate():
            self.student, report = builder.apply(self.teacher, self.plan)
        if not report:  # no student: the copy of the teacher
            return
        self.plan, dropped = drop_missing(self.plan, self.student, teacher=self.teacher)
        self.notes.update(report)
        if dropped:
            self.notes["plan_entries_not_applied"] = dropped
        self.changed = True  # a student always learns from the teacher

    def note_hints(self) -> None:
        """The layer pairs of hint distillation, for the trial's notes."""
        if self.settings.hint_weight == 0:
            return
        example = self.experiment.example_input
        try:
            pairs = hint_pairs(self.student, self.teacher, example)
        except ValueError as exc:
            raise InvalidPlan(f"finetune.hint_weight: {exc}") from None
        self.notes["hint_pairs"] = [f"{p.student} -> {p.teacher}" for p in pairs]

    def penalty_phase(self, penalty: Callable[[nn.Module], torch.Tensor], note: str) -> None:
        """Fine-tunes with ``penalty`` for half the epochs (none when fine-tuning is off)."""
        epochs = math.ceil(self.settings.epochs / 2)
        if epochs == 0:
            return
        self.experiment.task.fit(
            self.student,
            self.teacher,
            settings=replace(self.settings, epochs=epochs),
            seed=self.experiment.seed,
            gate=self.gate,
            penalty=penalty,
        )
        self.notes[note] = epochs

    def prune(self) -> None:
        if not any(r > 0 for r in self.plan.numbers("prune").values()):
            return
        if self.plan.get("method.prune_criterion") == "slimming":
            strength = l1_strength(self.plan)
            self.penalty_phase(lambda m: strength * bn_scale_penalty(m), "slimming_epochs")
        pruner = ChannelPruner(
            self.experiment.example_input,
            batches=lambda: training_batches(self.experiment.task),
            seed=self.experiment.seed,
            loss=self.experiment.task.loss,
        )
        with self.gate():
            self.student, report = pruner.apply(self.student, self.plan)
        self.notes.update(report)
        self.changed = True

    def factorize(self) -> None:
        if not any(s < 1 for s in self.plan.numbers("rank").values()):
            return
        with self.gate():
            self.student, report = LowRankFactorizer().apply(self.student, self.plan)
        self.notes.update(report)
        self.changed = self.changed or any(r is not None for r in report["ranks"].values())

    def sparsify(self) -> None:
        ratios = self.plan.numbers("sparsity")
        if not any(r > 0 for r in ratios.values()):
            return
        if self.plan.get("method.sparsity", "magnitude") == "l1":
            layers = [layer for layer, r in ratios.items() if r > 0]
            strength = l1_strength(self.plan)
            self.penalty_phase(lambda m: strength * l1_penalty(m, layers), "l1_epochs")
        with self.gate():
            self.student, report = UnstructuredPruner(seed=self.experiment.seed).apply(
                self.student, self.plan
            )
        self.notes.update(report)
        self.changed = True

    def finetune(self) -> None:
        """Fine-tunes with the teacher after a structural change, or for quantization-aware
        training; emulated low-bit layers (and int8 ones under QAT) compute with fake-quantized
        weights meanwhile. Then masks are baked in and weights rounded onto their grids."""
        quant = self.quantization()
        bits = quant.emulated()
        int8 = quant.layers("int8") if quant.method == "qat" else []
        bits.update({layer: 8 for layer in int8})
        self.changed = self.changed or bool(int8)
        trains = self.changed and self.settings.epochs > 0
        if trains:
            self.note_hints()
            with fake_quant_training(self.student, bits, activations=int8):
                self.experiment.task.fit(
                    self.student,
                    self.teacher,
                    settings=self.settings,
                    seed=self.experiment.seed,
                    gate=self.gate,
                )
        self.notes["finetuned_epochs"] = self.settings.epochs if self.changed else 0
        if trains and bits:
            self.notes["fake_quantized_training"] = sorted(bits)
        finalize(self.student)
        round_weights(
            self.student, quant.rounded(), rounding=quant.rounding, seed=self.experiment.seed
        )
        sparsity = {k: round(v, 4) for k, v in weight_sparsity(self.student).items() if v > 0}
        if sparsity:
            self.notes["weight_sparsity"] = sparsity


# the structural steps, in order (see the module's docstring); fine-tuning and export follow
STEPS: tuple[Callable[[_Steps], None], ...] = (
    _Steps.distill_student,
    _Steps.prune,
    _Steps.factorize,
    _Steps.sparsify,
)


def compress(
    experiment: Experiment, plan: Plan, workdir: Path, *, gate: Gate = nullcontext
) -> Candidate:
    """Build the plan's compressed model and its deployable ONNX file in ``workdir``.

    ``gate`` wraps every CPU-heavy step (see ``CpuGate.work``). The teacher is never modified.
    """
    check_sections(plan)
    steps = _Steps(experiment, plan, gate)
    for step in STEPS:  # each applies one compressor (or none) and notes its report
        step(steps)
    check_output_shape(steps.student, steps.teacher, experiment.task)
    steps.finetune()
    check_finite(steps.student, experiment.task)
    quantizer = OnnxQuantizer(calibration_source(experiment), target=experiment.target)
    with gate():
        fp32 = export_onnx(
            steps.student.eval(), experiment.example_input, workdir / "fp32.onnx", experiment.inputs
        )
        path = workdir / "model.onnx"
        steps.notes.update(quantizer.apply(fp32, path, steps.plan))
    return Candidate(plan=plan, module=steps.student, onnx_path=path, notes=steps.notes)
