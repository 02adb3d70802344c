"""Turning a bundle's measurements (``device.csv`` + ``device.json``, written by ``run.py`` on
the device) into a latency table, with every problem named: the file, the column, the row."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from edgecompress.targets import calibrate
from edgecompress.targets.table import (
    COLUMNS,
    FORMAT_VERSION,
    LatencyTable,
    Layer,
    TableError,
    _typed,
    read_header,
)

RUN_HEADER = ("device", "threads", "batch_size", "date", "reference_ms", "overhead_ms")


@dataclass
class Coverage:
    """What an imported run measured: rows kept, rows flagged noisy, rows missing and why."""

    rows: int
    noisy: int
    missing: list[str] = field(default_factory=list)  # "k00012 (failed: ...)" or "k00012"

    def summary(self) -> str:
        text = f"{self.rows} entries ({self.noisy} flagged noisy)"
        if self.missing:
            text += f"; {len(self.missing)} missing: " + ", ".join(self.missing[:5])
            text += " ..." if len(self.missing) > 5 else ""
        return text


def read_run(path: Path, *, manifest: Path | None = None) -> tuple[LatencyTable, Coverage]:
    """The table a device run measured. Rows that failed on the device, and rows of
    ``manifest`` (the bundle's, when given) the run does not have, are reported as missing;
    they are not guessed: a candidate that needs one of their kinds cannot be predicted."""
    path = Path(path)
    csv, meta = path.with_suffix(".csv"), path.with_suffix(".json")
    for file in (csv, meta):
        if not file.is_file():
            raise TableError(
                f"device run {file}: no such file (run.py writes NAME.csv and NAME.json)"
            )
    header = read_header(meta, RUN_HEADER, "device run header")
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    needed = ["id", "status", *COLUMNS]
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise TableError(f"device run {csv}: missing columns {absent}; expected {needed}")
    frame = frame[~frame["id"].duplicated(keep="last")]  # a kernel tried again: its last row
    failed = frame["status"].str.startswith("failed")
    missing = [
        f"{i} ({s})" for i, s in zip(frame["id"][failed], frame["status"][failed], strict=True)
    ]
    unknown = ~frame["status"].isin(["ok", "noisy"]) & ~failed
    if unknown.any():
        row = int(frame.index[unknown.to_numpy()][0]) + 1
        raise TableError(
            f"device run {csv}, row {row}, column 'status': {frame['status'][unknown].iloc[0]!r};"
            " expected ok, noisy or failed: ..."
        )
    kept = frame[~failed.to_numpy()].copy()  # its index: the rows of the file, for errors
    for column, kind in COLUMNS.items():
        kept[column] = _typed(csv, kept, column, kind)
    kept = kept.reset_index(drop=True)
    unmeasured: list[str] = []
    if manifest is not None:
        planned = pd.read_csv(manifest, dtype=str, keep_default_na=False)["id"]
        unmeasured = sorted(set(planned) - set(frame["id"]))
        missing += unmeasured
    table_header: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "device": header["device"],
        "threads": int(header["threads"]),
        "batch_size": int(header["batch_size"]),
        "date": header["date"],
        "overhead_ms": float(header["overhead_ms"]),
        "reference_ms": float(header["reference_ms"]),
        "source": str(csv),
        # every kernel tried; a kernel the device cannot run is reported, not retried forever
        "complete": bool(header.get("complete", False)) and not unmeasured,
        "failed": int(failed.sum()),
    }
    table = LatencyTable(kept[list(COLUMNS)], table_header)
    table.header.update(_calibration(path, table))
    coverage = Coverage(len(kept), int((kept["status"] == "noisy").sum()), missing)
    return table, coverage


def _calibration(path: Path, table: LatencyTable) -> dict[str, Any]:
    """The calibration (``targets.calibrate``) fitted on the whole models the run timed
    (``NAME-whole.csv``): each model's kernels priced by ``table`` (measured or interpolated),
    against its time. A model the device could not run, or with a kind the table lacks, is
    left out. Without that file the prediction is the plain sum of entries."""
    whole = Path(str(path.with_suffix("")) + "-whole.csv")
    if not whole.is_file():
        return {"scale": 1.0}
    runs = pd.read_csv(whole, dtype=str, keep_default_na=False)
    if "layers" not in runs.columns and "kernels" in runs.columns:
        return {
            "scale": 1.0,
            "calibration_skipped": f"{whole} is from an older bundle (kernel ids, not keys): "
            "plan a new bundle and run it to calibrate",
        }
    absent = [c for c in ("id", "layers", "latency_ms") if c not in runs.columns]
    if absent:
        raise TableError(
            f"whole-model run {whole}: missing columns {absent}; it is written by the bundle's "
            "run.py beside its output"
        )
    status = runs["status"] if "status" in runs.columns else pd.Series(["ok"] * len(runs))
    models: list[calibrate.Model] = []
    for row, (text, value, state) in enumerate(
        zip(runs["layers"], runs["latency_ms"], status, strict=True), 1
    ):
        if state.startswith("failed"):
            continue  # the device could not run it
        try:
            layers = _layers(text)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise TableError(
                f"whole-model run {whole}, row {row}, column 'layers': not the JSON list of "
                "kernel keys the bundle wrote"
            ) from None
        try:
            measured = float(value)
        except ValueError:
            measured = math.nan
        if not math.isfinite(measured) or measured <= 0:
            raise TableError(
                f"whole-model run {whole}, row {row}, column 'latency_ms': {value!r} is not a "
                "positive number of milliseconds"
            )
        try:
            model = _priced(layers, table)
        except TableError:
            continue  # a kind of it failed on the device: that model cannot calibrate
        models.append(replace(model, measured_ms=measured))
    if len(models) < 3:
        return {"scale": 1.0}
    fitted = calibrate.fit(models, float(table.header["overhead_ms"]))
    return {
        "scale": fitted.calibration.scale,
        "calibration": {**fitted.calibration.to_json(), **fitted.report},
    }


def _layers(text: str) -> list[Layer]:
    """The kernels' keys of one whole model, as the bundle wrote them (JSON)."""
    layers = []
    for item in json.loads(text):
        fields: dict[str, Any] = {
            k: COLUMNS[k](v) if k in COLUMNS else int(v) for k, v in item.items()
        }
        layers.append(Layer(**fields))
    return layers


def _priced(layers: list[Layer], table: LatencyTable) -> calibrate.Model:
    return calibrate.Model(
        classes=[calibrate.class_of(layer) for layer in layers],
        entries=[table.entry(layer)[0] for layer in layers],
        weights=[layer.weights for layer in layers],
    )
