"""The user's side: data, the fine-tuning loop with distillation, the task's metrics."""

from edgecompress.tasks.classification import ClassificationTask
from edgecompress.tasks.distill import (
    KD_MODES,
    HintPair,
    hard_loss,
    hint_loss,
    hint_pairs,
    hint_residual,
    soft_loss,
)
from edgecompress.tasks.metrics import ACCURACY, MAE, MSE, R2, RMSE, Metric
from edgecompress.tasks.regression import RegressionTask
from edgecompress.tasks.supervised import FinetuneSettings, SupervisedTask

__all__ = [
    "ACCURACY",
    "KD_MODES",
    "MAE",
    "MSE",
    "R2",
    "RMSE",
    "ClassificationTask",
    "FinetuneSettings",
    "HintPair",
    "Metric",
    "RegressionTask",
    "SupervisedTask",
    "hard_loss",
    "hint_loss",
    "hint_pairs",
    "hint_residual",
    "soft_loss",
]
