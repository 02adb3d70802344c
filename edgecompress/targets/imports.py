"""Turning a bundle's measurements (``device.csv`` + ``device.json``, written by ``run.py`` on
the device) into a latency table, with every problem named: the file, the column, the row."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgecompress.targets.table import (
    COLUMNS,
    FORMAT_VERSION,
    LatencyTable,
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
    table_header.update(_calibration(path, frame, kept, float(header["overhead_ms"])))
    coverage = Coverage(len(kept), int((kept["status"] == "noisy").sum()), missing)
    return LatencyTable(kept[list(COLUMNS)], table_header), coverage


def _calibration(
    path: Path, frame: pd.DataFrame, kept: pd.DataFrame, overhead_ms: float
) -> dict[str, Any]:
    """The scale of the sum of entries, fitted on the bundle's whole models measured whole.

    A kernel timed alone runs with its weights and inputs hot in cache; inside a model it
    follows other kernels. The run times a sample of the enumerated plans' models whole; the
    least-squares ``scale`` (through the origin) maps the sum of their entries onto their time
    less the call overhead. Without a whole-model file the scale is 1 (the plain sum)."""
    whole = Path(str(path.with_suffix("")) + "-whole.csv")
    if not whole.is_file():
        return {"scale": 1.0}
    runs = pd.read_csv(whole, dtype=str, keep_default_na=False)
    ms = dict(
        zip(
            frame.loc[~frame["status"].str.startswith("failed"), "id"],
            kept["latency_ms"],
            strict=True,
        )
    )
    sums, measured = [], []
    for row, (ids, value) in enumerate(zip(runs["kernels"], runs["latency_ms"], strict=True), 1):
        try:
            sums.append(sum(float(ms[i]) for i in ids.split()))
            measured.append(float(value) - overhead_ms)
        except KeyError:
            continue  # a kernel of it failed on the device: that model cannot calibrate
        except ValueError:
            raise TableError(
                f"whole-model run {whole}, row {row}, column 'latency_ms': {value!r} is not a "
                "number"
            ) from None
    if len(sums) < 3:
        return {"scale": 1.0}
    s, m = np.asarray(sums), np.asarray(measured)
    scale = float(s @ m / (s @ s))
    before = float(np.median(np.abs(s / m - 1)) * 100)
    after = float(np.median(np.abs(scale * s / m - 1)) * 100)
    return {
        "scale": scale,
        "calibration": {"models": len(sums), "median_error_pct": [before, after]},
    }
