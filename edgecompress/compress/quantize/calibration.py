"""Calibration data for static quantization: checked before any calibration runs.

A calibration source is a callable returning fresh batches: arrays (fed to the model's single
input) or ``{input name: array}`` dicts, each in the dtype its input takes (float32, or int64
token ids); a dict's entries for inputs the exported graph does not read are left out.
``calibration_batches`` takes the first ``samples`` samples of it, after checking every batch
against the model's inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod

from edgecompress.errors import EdgeCompressError

Batch = np.ndarray | Mapping[str, np.ndarray]
Source = Callable[[], Iterable[Batch]]
METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


class CalibrationError(EdgeCompressError, ValueError):
    """Calibration data that does not fit the model: refused before calibrating."""


def model_inputs(model: onnx.ModelProto) -> dict[str, tuple[int | str, ...]]:
    """``{name: shape}`` of the graph's real inputs (dynamic dimensions as their names)."""
    inits = {i.name for i in model.graph.initializer}
    found = {}
    for value in model.graph.input:
        if value.name in inits:
            continue
        dims = value.type.tensor_type.shape.dim
        found[value.name] = tuple(d.dim_param or d.dim_value for d in dims)
    return found


def input_dtypes(model: onnx.ModelProto) -> dict[str, np.dtype]:
    """``{name: numpy dtype}`` of the graph's real inputs."""
    inits = {i.name for i in model.graph.initializer}
    return {
        v.name: np.dtype(onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type))
        for v in model.graph.input
        if v.name not in inits
    }


def calibration_batches(
    source: Source, model: onnx.ModelProto, samples: int
) -> list[dict[str, np.ndarray]]:
    """The first ``samples`` samples of ``source`` as input feeds, every batch checked first."""
    if samples < 1:
        raise CalibrationError(f"calibration samples must be >= 1, got {samples}")
    inputs, dtypes = model_inputs(model), input_dtypes(model)
    feeds, taken = [], 0
    for i, batch in enumerate(source()):
        feed = _feed(batch, inputs, dtypes, i)
        rows = min(samples - taken, len(next(iter(feed.values()))))
        feeds.append({k: v[:rows] for k, v in feed.items()})
        taken += rows
        if taken >= samples:
            break
    if not feeds:
        raise CalibrationError(
            "the calibration data is empty: static quantization needs input batches. Check "
            "the task's train loader (calibration takes its first samples)."
        )
    return feeds


def _feed(
    batch: Any,
    inputs: dict[str, tuple[int | str, ...]],
    dtypes: dict[str, np.dtype],
    i: int,
) -> dict[str, np.ndarray]:
    if isinstance(batch, Mapping):
        # an input the model ignores is not in its exported graph: not fed
        feed = (
            {k: v for k, v in batch.items() if k in inputs}
            if set(inputs) <= set(batch)
            else dict(batch)
        )
    elif len(inputs) == 1:
        feed = {next(iter(inputs)): batch}
    else:
        raise CalibrationError(
            f"calibration batch {i}: the model has inputs {sorted(inputs)}; give each batch as "
            "a dict {input name: array}."
        )
    if set(feed) != set(inputs):
        raise CalibrationError(
            f"calibration batch {i}: expected inputs {sorted(inputs)}, got {sorted(feed)}"
        )
    for name, array in feed.items():
        _check_array(name, array, inputs[name], dtypes[name], i)
    return {k: np.ascontiguousarray(v) for k, v in feed.items()}


def _check_array(
    name: str, array: Any, shape: tuple[int | str, ...], dtype: np.dtype, i: int
) -> None:
    if not isinstance(array, np.ndarray):
        raise CalibrationError(
            f"calibration batch {i}, input {name!r}: expected a numpy array, got "
            f"{type(array).__name__}"
        )
    if array.dtype != dtype:
        raise CalibrationError(
            f"calibration batch {i}, input {name!r}: expected dtype {dtype}, got {array.dtype}"
        )
    fixed = all(isinstance(d, int) and d > 0 for d in shape[1:])
    if array.ndim != len(shape) or (fixed and tuple(array.shape[1:]) != tuple(shape[1:])):
        expected = ("batch",) + tuple(shape[1:])
        raise CalibrationError(
            f"calibration batch {i}, input {name!r}: expected shape {expected}, got "
            f"{tuple(array.shape)}"
        )
    if len(array) == 0:
        raise CalibrationError(f"calibration batch {i}, input {name!r} is empty (0 samples)")


class FeedReader(CalibrationDataReader):
    """ONNX Runtime's reader over checked feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)
