"""Accuracy of the deployed artifact: the ONNX model in ONNX Runtime, never a PyTorch proxy."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgecompress.compress import Candidate
from edgecompress.evaluators.latency import feed_of
from edgecompress.evaluators.runtime import session
from edgecompress.inputs import InputSpec, take
from edgecompress.plan import InvalidPlan
from edgecompress.tasks import ClassificationTask


def onnx_accuracy(
    path: Path | bytes,
    x: np.ndarray | dict[str, np.ndarray],
    y: np.ndarray,
    *,
    threads: int = 1,
    batch_size: int = 256,
) -> float:
    """Top-1 accuracy of the ONNX model on ``x``: one array (a model with one input) or
    ``{input name: array}`` (``InputSpec.named``); outputs that are not finite numbers are
    refused (``InvalidPlan``): argmax over NaN is chance accuracy, not a measurement."""
    sess = session(path, threads=threads)
    feed = feed_of(sess, x)
    correct = bad = 0
    for start in range(0, len(y), batch_size):
        logits = sess.run(None, take(feed, start, start + batch_size))[0]
        bad += int((~np.isfinite(logits)).reshape(len(logits), -1).any(axis=1).sum())
        correct += int((logits.argmax(axis=1) == y[start : start + batch_size]).sum())
    if bad:
        raise InvalidPlan(
            f"the deployed model outputs NaN or inf on {bad} of {len(y)} inputs in ONNX Runtime "
            "(an overflow in a low precision, or a broken model): no accuracy is recorded."
        )
    return correct / len(y)


def standard_error(accuracy: float, samples: int) -> float:
    """The binomial standard error of an accuracy measured on ``samples`` samples."""
    return math.sqrt(accuracy * (1 - accuracy) / samples) if samples else math.nan


class OnnxAccuracy:
    """``accuracy`` on the validation split (selection) with its standard error
    (``accuracy_se``); ``test_accuracy`` reported, if any. ``inputs`` names the task's
    inputs (the experiment's ``InputSpec``; ``None``: one array, the model's one input)."""

    def __init__(self, task: ClassificationTask, inputs: InputSpec | None = None) -> None:
        self.task, self.inputs = task, inputs

    def split(self, split: str) -> tuple[np.ndarray | dict[str, np.ndarray], np.ndarray]:
        x, y = self.task.arrays(split)
        return (x if self.inputs is None else self.inputs.named(x)), y

    def __call__(self, candidate: Candidate) -> dict[str, float]:
        x, y = self.split("val")
        accuracy = onnx_accuracy(candidate.onnx_path, x, y)
        metrics = {"accuracy": accuracy, "accuracy_se": standard_error(accuracy, len(y))}
        if self.task.test is not None:
            metrics["test_accuracy"] = onnx_accuracy(candidate.onnx_path, *self.split("test"))
        return metrics
