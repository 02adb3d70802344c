"""The user's side: data, the fine-tuning loop with distillation, the task's metrics."""

from edgecompress.tasks.classification import ClassificationTask, FinetuneSettings
from edgecompress.tasks.distill import (
    KD_MODES,
    HintPair,
    hard_loss,
    hint_loss,
    hint_pairs,
    hint_residual,
    soft_loss,
)

__all__ = [
    "KD_MODES",
    "ClassificationTask",
    "FinetuneSettings",
    "HintPair",
    "hard_loss",
    "hint_loss",
    "hint_pairs",
    "hint_residual",
    "soft_loss",
]
