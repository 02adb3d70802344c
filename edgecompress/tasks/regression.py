"""RegressionTask: real-valued outputs of any shape, scored by RMSE (or MAE, MSE, R2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from edgecompress.tasks.metrics import COSINE, MAE, MSE, R2, RMSE, Metric
from edgecompress.tasks.supervised import SupervisedTask


@dataclass(frozen=True, kw_only=True)
class RegressionTask(SupervisedTask):
    """Loaders yield ``(inputs, targets)`` with real-valued targets of the outputs' shape (or
    the same number of values per sample); the model returns one tensor ``(batch, ...)``.

    Fine-tuning minimises ``kd_weight`` x the squared error to the teacher's outputs +
    ``1 - kd_weight`` x the squared error to the targets; the profile measures the squared
    difference to the teacher's outputs relative to their variance. The study minimises
    ``metric``: "rmse" (default), "mae" or "mse", or maximises "r2" or "cosine" (the mean cosine
    similarity of each output row to its target: embeddings); all five are recorded.
    """

    metrics: ClassVar[tuple[Metric, ...]] = (RMSE, MAE, MSE, R2, COSINE)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs, targets.to(outputs.dtype).reshape(outputs.shape))

    def targets(self, y: np.ndarray) -> np.ndarray:
        return y.astype(np.float32)

    def check_outputs(self, outputs: Any) -> str | None:
        if not isinstance(outputs, torch.Tensor) or not outputs.is_floating_point():
            what = outputs.dtype if isinstance(outputs, torch.Tensor) else type(outputs).__name__
            return f"a regression model must return one floating-point tensor; it returned {what}"
        if outputs.dim() < 1:
            return "a regression model must return a (batch, ...) tensor; it returned a scalar"
        return None

    def check_targets(self, outputs: torch.Tensor, targets: torch.Tensor) -> str | None:
        found = super().check_targets(outputs, targets)
        if found is not None:
            return found
        if targets.dtype.is_complex or targets.dtype == torch.bool:
            return f"regression targets must be real numbers, got {targets.dtype}"
        per_output = outputs[0].numel() if len(outputs) else 0
        per_target = targets[0].numel() if len(targets) else 0
        if per_output != per_target:
            return (
                f"each sample has {per_target} target values but the model outputs "
                f"{per_output} (outputs {tuple(outputs.shape)}, targets {tuple(targets.shape)})"
            )
        return None
