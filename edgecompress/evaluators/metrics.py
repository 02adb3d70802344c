"""The task's metrics on the deployed artifact: the ONNX model in the target's runtime (ONNX
Runtime, or OpenVINO), never a PyTorch proxy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.compress import Candidate
from edgecompress.evaluators.latency import feed_of
from edgecompress.evaluators.runtime import session
from edgecompress.inputs import InputSpec, rows, take
from edgecompress.plan import InvalidPlan
from edgecompress.tasks import ACCURACY, SupervisedTask


def onnx_outputs(
    path: Path | bytes,
    x: np.ndarray | dict[str, np.ndarray],
    *,
    threads: int = 1,
    batch_size: int = 256,
    runtime: str = "onnxruntime",
) -> np.ndarray:
    """The ONNX model's first output on ``x``: one array (a model with one input) or
    ``{input name: array}`` (``InputSpec.named``), run by ``runtime`` (``Target.runtime``).
    Outputs that are not finite numbers are refused (``InvalidPlan``): a metric of NaN outputs
    is not a measurement."""
    if runtime == "openvino":
        from edgecompress.targets import openvino  # an optional dependency

        outputs = openvino.outputs(path, x, threads=threads, batch_size=batch_size)
        total, where = len(outputs), "OpenVINO"
    else:
        sess = session(path, threads=threads)
        feed = feed_of(sess, x)
        total, where = rows(feed), "ONNX Runtime"
        outputs = np.concatenate(
            [sess.run(None, take(feed, i, i + batch_size))[0] for i in range(0, total, batch_size)]
        )
    bad = int((~np.isfinite(outputs)).reshape(len(outputs), -1).any(axis=1).sum())
    if bad:
        raise InvalidPlan(
            f"the deployed model outputs NaN or inf on {bad} of {total} inputs in {where} "
            "(an overflow in a low precision, or a broken model): no metric is recorded."
        )
    return outputs


def onnx_accuracy(
    path: Path | bytes, x: np.ndarray | dict[str, np.ndarray], y: np.ndarray, **kwargs: Any
) -> float:
    """Top-1 accuracy of the ONNX model on ``x`` against labels ``y`` (see ``onnx_outputs``):
    ``ACCURACY``'s score, as a study records it."""
    return ACCURACY.score(onnx_outputs(path, x, **kwargs), y)[0]


class OnnxMetrics:
    """Every metric of the task on the validation split (selection) with its standard error
    (``<name>``, ``<name>_se``), and on the test split if any (``test_<name>``, reported).
    ``inputs`` names the task's inputs (the experiment's ``InputSpec``; ``None``: one array,
    the model's one input)."""

    def __init__(
        self, task: SupervisedTask, inputs: InputSpec | None = None, runtime: str = "onnxruntime"
    ) -> None:
        self.task, self.inputs, self.runtime = task, inputs, runtime

    def split(self, split: str) -> tuple[np.ndarray | dict[str, np.ndarray], np.ndarray]:
        x, y = self.task.arrays(split)
        return (x if self.inputs is None else self.inputs.named(x)), y

    def scores(self, model: Path | bytes, split: str) -> dict[str, float]:
        """``task.evaluate`` of the ONNX model's outputs on ``split``."""
        x, y = self.split(split)
        return self.task.evaluate(onnx_outputs(model, x, runtime=self.runtime), y)

    def __call__(self, candidate: Candidate) -> dict[str, float]:
        metrics = self.scores(candidate.onnx_path, "val")
        if self.task.test is not None:
            test = self.scores(candidate.onnx_path, "test")
            metrics |= {f"test_{m}": test[m] for m in self.task.metric_names}
        return metrics
