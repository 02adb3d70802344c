"""ClassificationTask: logits of shape (batch, classes), int64 labels, top-1 accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from edgecompress.tasks.distill import logit_loss
from edgecompress.tasks.metrics import ACCURACY, Metric
from edgecompress.tasks.supervised import FinetuneSettings, SupervisedTask


@dataclass(frozen=True, kw_only=True)
class ClassificationTask(SupervisedTask):
    """Loaders yield ``(inputs, labels)``; the model returns logits ``(batch, classes)``.

    Fine-tuning distils the teacher's logits (``FinetuneSettings.kd_mode``: soft targets with a
    temperature, or the teacher's hard labels) with cross-entropy on the labels; the profile
    measures the KL divergence to the teacher's softmax; the study maximises top-1 accuracy.
    """

    metrics: ClassVar[tuple[Metric, ...]] = (ACCURACY,)
    distillation_reads: ClassVar[tuple[str, ...]] = (
        "kd_weight",
        "temperature",
        "kd_mode",
        "hint_weight",
    )

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def distillation_loss(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        targets: torch.Tensor,
        settings: FinetuneSettings,
    ) -> torch.Tensor:
        return logit_loss(
            student,
            teacher,
            targets,
            mode=settings.kd_mode,
            temperature=settings.temperature,
            kd_weight=settings.kd_weight,
        )

    def divergence(self, teacher: np.ndarray, student: np.ndarray) -> float:
        """Mean KL(teacher || student) of the softmax outputs, in nats."""
        t = _log_softmax(teacher.astype(np.float64))
        s = _log_softmax(student.astype(np.float64))
        kl = float(np.mean(np.sum(np.exp(t) * (t - s), axis=1)))
        return kl if np.isfinite(kl) else float("inf")  # a model that outputs NaN is ruined

    def targets(self, y: np.ndarray) -> np.ndarray:
        return y.astype(np.int64)

    def check_outputs(self, outputs: Any) -> str | None:
        if not isinstance(outputs, torch.Tensor) or outputs.dim() != 2:
            shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else None
            return (
                "a classification model must return logits of shape (batch, classes); it "
                f"returned {shape if shape is not None else type(outputs).__name__}"
            )
        return None

    def check_targets(self, outputs: torch.Tensor, targets: torch.Tensor) -> str | None:
        found = super().check_targets(outputs, targets)
        if found is not None:
            return found
        if targets.dim() != 1 or targets.is_floating_point():
            return (
                f"classification targets must be integer labels of shape (batch,), got "
                f"{targets.dtype} of shape {tuple(targets.shape)} (for real-valued targets use "
                "RegressionTask)"
            )
        classes = outputs.shape[1]
        if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= classes):
            return (
                f"labels must lie in [0, {classes}) for a model with {classes} outputs, got "
                f"{int(targets.min())}..{int(targets.max())}"
            )
        return None


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
