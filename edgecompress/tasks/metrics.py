"""A task's metrics: name, direction, and how to score outputs (numpy) against targets.

A study optimises one metric (its first objective, named after it: ``accuracy``, ``rmse``,
...); every metric of the task is recorded for every trial. ``score`` returns the value and its
standard error over the samples (``nan`` where none is defined), so that a front can say how
much of a difference is noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class Metric:
    """``name`` (a word: it names the study's first objective and the columns ``<name>``,
    ``<name>_se``, ``test_<name>``), ``direction`` ("maximize" or "minimize") and
    ``score(outputs, targets) -> (value, standard error)`` on numpy arrays."""

    name: str
    direction: str
    score: Callable[[np.ndarray, np.ndarray], tuple[float, float]]
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"Metric.name {self.name!r} must be a word (letters, digits, _)")
        if self.direction not in DIRECTIONS:
            raise ValueError(
                f"Metric {self.name!r}: direction must be one of {DIRECTIONS}, "
                f"got {self.direction!r}"
            )

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "maximize"

    def signed(self, value: float) -> float:
        """``value`` as a quantity to maximize (minimized metrics are negated)."""
        return value if self.higher_is_better else -value

    def within(self, value: float, reference: float, drop: float) -> bool:
        """``value`` is at most ``drop`` worse than ``reference`` (in the metric's units)."""
        return self.signed(value) >= self.signed(reference) - drop - 1e-12

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "direction": self.direction}


def _accuracy(outputs: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    value = float((outputs.argmax(axis=1) == targets).mean())
    return value, math.sqrt(value * (1 - value) / len(targets))


def _errors(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Outputs minus targets, one row per sample (every output element a column)."""
    diff = outputs.reshape(len(outputs), -1).astype(np.float64) - targets.reshape(
        len(targets), -1
    ).astype(np.float64)
    return diff


def _se(per_sample: np.ndarray) -> float:
    return (
        float(per_sample.std(ddof=1) / math.sqrt(len(per_sample)))
        if len(per_sample) > 1
        else math.nan
    )


def _mse(outputs: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    per = (_errors(outputs, targets) ** 2).mean(axis=1)
    return float(per.mean()), _se(per)


def _rmse(outputs: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    mse, se = _mse(outputs, targets)
    value = math.sqrt(mse)
    return value, (se / (2 * value) if value > 0 else math.nan)  # the delta method


def _mae(outputs: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    per = np.abs(_errors(outputs, targets)).mean(axis=1)
    return float(per.mean()), _se(per)


def _r2(outputs: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    y = targets.reshape(len(targets), -1).astype(np.float64)
    residual = ((_errors(outputs, targets)) ** 2).sum()
    total = ((y - y.mean(axis=0)) ** 2).sum()
    value = 1.0 - residual / total if total > 0 else math.nan
    return float(value), math.nan


def _cosine(outputs: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """The mean over samples of the cosine similarity of each output row to its target row
    (embeddings: 1 is the same direction); a zero row has similarity 0."""
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = targets.reshape(len(targets), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    per = np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0), 0.0)
    return float(per.mean()), _se(per)


def shown(value: float, name: str) -> str:
    """A metric's value as printed: accuracy to 4 places, others to 4 significant digits (a
    small error such as an MSE of 0.00072 must not show as 0.0000)."""
    return f"{value:.4f}" if name == "accuracy" else f"{value:.4g}"


ACCURACY = Metric("accuracy", "maximize", _accuracy, "top-1 accuracy (argmax over dim 1)")
MSE = Metric("mse", "minimize", _mse, "mean squared error")
RMSE = Metric("rmse", "minimize", _rmse, "root mean squared error")
MAE = Metric("mae", "minimize", _mae, "mean absolute error")
R2 = Metric("r2", "maximize", _r2, "coefficient of determination (1 - SSE / SST)")
COSINE = Metric(
    "cosine", "maximize", _cosine, "mean cosine similarity of each output to its target"
)
