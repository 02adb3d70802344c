"""How to apply a Plan: prune -> fine-tune with the teacher (KD) -> ONNX export -> quantize."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import fields
from pathlib import Path
from typing import Any

from edgecompress.compress.candidate import Candidate
from edgecompress.compress.onnx_export import export_onnx, layer_nodes
from edgecompress.compress.prune import ChannelPruner
from edgecompress.compress.quantize import StaticInt8Quantizer, int8_layers
from edgecompress.experiment import Experiment
from edgecompress.plan import InvalidPlan, Plan
from edgecompress.tasks import FinetuneSettings

__all__ = [
    "Candidate",
    "ChannelPruner",
    "StaticInt8Quantizer",
    "compress",
    "export_onnx",
    "finetune_settings",
    "int8_layers",
    "layer_nodes",
]


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


def compress(
    experiment: Experiment,
    plan: Plan,
    workdir: Path,
    *,
    gate: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> Candidate:
    """Build the plan's compressed model and its deployable ONNX file in ``workdir``.

    Fine-tuning recovers from structural change, so it runs only when the plan removed channels;
    a plan that only quantizes is post-training quantization of the teacher. ``gate`` wraps
    every CPU-heavy step (see ``CpuGate.work``).
    """
    settings = finetune_settings(plan, experiment.task.finetune)
    with gate():
        teacher = experiment.model().eval()
        student = ChannelPruner(experiment.example_input).apply(teacher, plan)
    pruned = any(float(r) > 0 for r in plan.section("prune").values())
    if pruned:
        experiment.task.fit(student, teacher, settings=settings, seed=experiment.seed, gate=gate)
    quantizer = StaticInt8Quantizer(experiment.task.calibration_batches)
    with gate():
        fp32 = export_onnx(student, experiment.example_input, workdir / "fp32.onnx")
        path = quantizer.apply(fp32, workdir / "model.onnx", plan)
    notes = {"finetuned_epochs": settings.epochs if pruned else 0, "quantization": "static QDQ"}
    return Candidate(plan=plan, module=student, onnx_path=path, notes=notes)
