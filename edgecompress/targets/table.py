"""Latency tables: what one device measured for each layer configuration, and predictions.

A table is two files, no pickles: ``NAME.csv`` (one row per measured configuration) and
``NAME.json`` (the header: format version, the device description, ONNX Runtime version,
threads, batch size, date, the per-inference overhead, and the ``calibration`` fitted on whole
models, see ``targets.calibrate``, or one ``scale``). Columns:

- ``op`` (the runtime's kernel: ``Conv``, ``com.microsoft:FusedConv``, ``QLinearConv``,
  ``MatMulNBits``, and the ``QuantizeLinear``/``DequantizeLinear``/``Cast``/``Transpose`` kernels
  between precisions), ``precision`` (``fp32``, ``fp16``, ``int8``, ``int4``: what its input
  holds), ``fused`` (the activation fused into it, e.g. ``Relu``), ``kernel`` (``5``,
  ``3x3``), ``groups``, ``spatial`` (output size, ``40`` or ``32x32``), ``attrs`` (its other
  attributes, ``name=value;...``): the *kind* of the configuration;
- ``in_channels``, ``out_channels``: its widths (elements in and out for a kernel without
  weights), and ``work``: multiply-adds (elements moved, for a kernel without weights);
- ``latency_ms`` (median), ``p90_ms``, ``spread_pct`` (the measurement's own spread).

A configuration that was not measured is estimated from the rows of the same kind (see
``targets.interpolate``); its uncertainty grows with the distance to the rows used.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from edgecompress.errors import EdgeCompressError
from edgecompress.targets.calibrate import Calibration, Model, class_of
from edgecompress.targets.interpolate import Rows

FORMAT_VERSION = 1
KIND = ("op", "precision", "fused", "kernel", "groups", "spatial", "attrs")
COLUMNS = {
    "op": str,
    "precision": str,
    "fused": str,
    "kernel": str,
    "groups": int,
    "spatial": str,
    "attrs": str,
    "in_channels": int,
    "out_channels": int,
    "work": float,
    "latency_ms": float,
    "p90_ms": float,
    "spread_pct": float,
}
HEADER = ("format_version", "device", "threads", "batch_size", "date", "overhead_ms")


class TableError(EdgeCompressError, ValueError):
    """A table file that cannot be used: names the file, the column and the row."""


@dataclass(frozen=True)
class Layer:
    """One kernel of a candidate as a table looks it up (see the module's docstring)."""

    op: str
    precision: str
    in_channels: int
    out_channels: int
    work: float
    kernel: str = ""
    groups: int = 1
    spatial: str = ""
    fused: str = ""
    attrs: str = ""
    # bytes of its constant inputs (weights, scales): not part of its key, the calibration's
    # cold-weights term sums them over a model (see ``targets.calibrate``)
    weights: int = 0

    def kind(self) -> tuple[Any, ...]:
        return tuple(getattr(self, column) for column in KIND)

    def key(self) -> tuple[Any, ...]:
        """The kind and the widths: what makes two kernels the same measurement."""
        return (*self.kind(), self.in_channels, self.out_channels, self.work)

    def row(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in COLUMNS if hasattr(self, c)}


@dataclass(frozen=True)
class Prediction:
    latency_ms: float
    uncertainty_ms: float
    interpolated: int  # layers not measured exactly


@dataclass(frozen=True)
class LatencyTable:
    """``entries``: a DataFrame with ``COLUMNS``; ``header``: ``HEADER`` keys and more."""

    entries: pd.DataFrame
    header: dict[str, Any]

    def save(self, path: Path) -> tuple[Path, Path]:
        """Writes ``path`` (.csv) and its header beside it (.json); returns both paths."""
        csv, meta = path.with_suffix(".csv"), path.with_suffix(".json")
        csv.parent.mkdir(parents=True, exist_ok=True)
        self.entries[list(COLUMNS)].to_csv(csv, index=False)
        meta.write_text(json.dumps(self.header, indent=2, sort_keys=True) + "\n")
        return csv, meta

    def predict(self, layers: list[Layer]) -> Prediction:
        """The layers' entries, calibrated (``calibration``), plus the per-inference overhead.
        The uncertainty is the entries' own, and the calibration's cross-validated spread."""
        calibration = self.calibration
        classes = [class_of(layer) for layer in layers]
        entries, variance, interpolated = [], 0.0, 0
        for layer, cls in zip(layers, classes, strict=True):
            ms, sd, exact = self.entry(layer)
            entries.append(ms)
            variance += (calibration.coefficients(cls)[0] * sd) ** 2
            interpolated += not exact
        model = Model(classes, entries, [layer.weights for layer in layers])
        latency = float(self.header["overhead_ms"]) + calibration.apply(model)
        # the calibration's errors are relative to whole models' times, overhead and all
        variance += (latency * calibration.residual_pct / 100) ** 2
        return Prediction(latency, math.sqrt(variance), interpolated)

    @cached_property
    def calibration(self) -> Calibration:
        """How the sum of entries becomes a model's time (``targets.calibrate``): fitted on
        whole models, one scale with few of them, the plain sum without."""
        fitted = self.header.get("calibration")
        if isinstance(fitted, dict) and "classes" in fitted:
            return Calibration.from_json(fitted)
        return Calibration(scale=float(self.header.get("scale", 1.0)))

    def entry(self, layer: Layer) -> tuple[float, float, bool]:
        """(ms, its standard deviation, whether it was measured exactly) of one kernel."""
        key = layer.key()
        known = self._cache.get(key)
        if known is not None:
            return known
        rows = self._index.get(layer.kind())
        if rows is None:
            raise TableError(
                f"the table has no entry of the kind {dict(zip(KIND, layer.kind(), strict=True))}"
                "; build the table from a space that produces this layer, or add it"
            )
        found = rows.estimate(layer.in_channels, layer.out_channels, layer.work)
        self._cache[key] = found
        return found

    @cached_property
    def _cache(self) -> dict[tuple[Any, ...], tuple[float, float, bool]]:
        return {}

    @cached_property
    def _index(self) -> dict[tuple[Any, ...], Rows]:
        """The rows of each kind, as arrays (built once: a prediction is dictionary lookups,
        and a fit where a configuration was not measured)."""
        index = {}
        for kind, rows in self.entries.groupby(list(KIND), sort=False):
            index[tuple(kind)] = Rows(
                rows["in_channels"].to_numpy(float),
                rows["out_channels"].to_numpy(float),
                rows["work"].to_numpy(float),
                rows["latency_ms"].to_numpy(float),
                (rows["latency_ms"] * rows["spread_pct"] / 100).to_numpy(float),
            )
        return index


def load_table(path: Path) -> LatencyTable:
    """Reads ``path`` (.csv) and its .json header, checking columns, types, units and values;
    a problem is a ``TableError`` naming the file, the column and the row."""
    csv, meta = Path(path).with_suffix(".csv"), Path(path).with_suffix(".json")
    for file in (csv, meta):
        if not file.is_file():
            raise TableError(
                f"latency table {file}: no such file (a table is NAME.csv + NAME.json)"
            )
    header = _header(meta)
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise TableError(
            f"latency table {csv}: missing columns {missing}; expected {list(COLUMNS)}"
        )
    for column, kind in COLUMNS.items():
        frame[column] = _typed(csv, frame, column, kind)
    return LatencyTable(frame[list(COLUMNS)], header)


def read_header(meta: Path, keys: tuple[str, ...], what: str) -> dict[str, Any]:
    """A JSON header with ``keys``; ``what`` names it in errors ("latency table header")."""
    try:
        header = json.loads(meta.read_text())
    except json.JSONDecodeError as exc:
        raise TableError(f"{what} {meta}: not JSON ({exc})") from None
    missing = [k for k in keys if k not in header]
    if missing:
        raise TableError(f"{what} {meta}: missing keys {missing}")
    return dict(header)


def _header(meta: Path) -> dict[str, Any]:
    header = read_header(meta, HEADER, "latency table header")
    if header["format_version"] != FORMAT_VERSION:
        raise TableError(
            f"latency table header {meta}: format_version {header['format_version']!r}; this "
            f"edgecompress reads version {FORMAT_VERSION}. Rebuild the table."
        )
    return dict(header)


def _typed(csv: Path, frame: pd.DataFrame, column: str, kind: type) -> pd.Series:
    """The column converted; the first bad cell is named by its row (1 = the first data row)."""
    if kind is str:
        return frame[column].astype(str)
    values = []
    for index, text in zip(frame.index, frame[column], strict=True):
        row = int(index) + 1  # the frame's own index: the file's data rows from 0
        try:
            value = kind(float(text)) if kind is int else float(text)
        except ValueError:
            raise TableError(
                f"latency table {csv}, row {row}, column {column!r}: {text!r} is not a number"
            ) from None
        if not math.isfinite(value) or value < 0:
            raise TableError(
                f"latency table {csv}, row {row}, column {column!r}: {value} must be a finite "
                "number >= 0 (latencies in milliseconds)"
            )
        values.append(value)
    return pd.Series(values, index=frame.index, dtype=kind)
