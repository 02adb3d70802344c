"""Accuracy of the deployed artifact: the ONNX model in ONNX Runtime, never a PyTorch proxy."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgecompress.compress import Candidate
from edgecompress.evaluators.runtime import session
from edgecompress.plan import InvalidPlan
from edgecompress.tasks import ClassificationTask


def onnx_accuracy(
    path: Path | bytes, x: np.ndarray, y: np.ndarray, *, threads: int = 1, batch_size: int = 256
) -> float:
    """Top-1 accuracy of the ONNX model; outputs that are not finite numbers are refused
    (``InvalidPlan``): argmax over NaN is chance accuracy, not a measurement."""
    sess = session(path, threads=threads)
    name = sess.get_inputs()[0].name
    correct = bad = 0
    for start in range(0, len(x), batch_size):
        logits = sess.run(None, {name: x[start : start + batch_size]})[0]
        bad += int((~np.isfinite(logits)).reshape(len(logits), -1).any(axis=1).sum())
        correct += int((logits.argmax(axis=1) == y[start : start + batch_size]).sum())
    if bad:
        raise InvalidPlan(
            f"the deployed model outputs NaN or inf on {bad} of {len(x)} inputs in ONNX Runtime "
            "(an overflow in a low precision, or a broken model): no accuracy is recorded."
        )
    return correct / len(x)


def standard_error(accuracy: float, samples: int) -> float:
    """The binomial standard error of an accuracy measured on ``samples`` samples."""
    return math.sqrt(accuracy * (1 - accuracy) / samples) if samples else math.nan


class OnnxAccuracy:
    """``accuracy`` on the validation split (selection) with its standard error
    (``accuracy_se``); ``test_accuracy`` reported, if any."""

    def __init__(self, task: ClassificationTask) -> None:
        self.task = task

    def __call__(self, candidate: Candidate) -> dict[str, float]:
        x, y = self.task.arrays("val")
        accuracy = onnx_accuracy(candidate.onnx_path, x, y)
        metrics = {"accuracy": accuracy, "accuracy_se": standard_error(accuracy, len(y))}
        if self.task.test is not None:
            x, y = self.task.arrays("test")
            metrics["test_accuracy"] = onnx_accuracy(candidate.onnx_path, x, y)
        return metrics
