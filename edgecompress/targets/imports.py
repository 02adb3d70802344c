"""Turning a bundle's measurements (``device.csv`` + ``device.json``, written by ``run.py`` on
the device) into a latency table, with every problem named: the file, the column, the row."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from edgecompress.targets.table import COLUMNS, FORMAT_VERSION, LatencyTable, TableError, _typed

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
    try:
        header = json.loads(meta.read_text())
    except json.JSONDecodeError as exc:
        raise TableError(f"device run header {meta}: not JSON ({exc})") from None
    lacking = [k for k in RUN_HEADER if k not in header]
    if lacking:
        raise TableError(f"device run header {meta}: missing keys {lacking}")
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    needed = ["id", "status", *COLUMNS]
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise TableError(f"device run {csv}: missing columns {absent}; expected {needed}")
    failed = frame["status"].str.startswith("failed")
    missing = [
        f"{i} ({s})" for i, s in zip(frame["id"][failed], frame["status"][failed], strict=True)
    ]
    unknown = ~frame["status"].isin(["ok", "noisy"]) & ~failed
    if unknown.any():
        row = int(unknown.to_numpy().nonzero()[0][0]) + 1
        raise TableError(
            f"device run {csv}, row {row}, column 'status': {frame['status'][unknown].iloc[0]!r};"
            " expected ok, noisy or failed: ..."
        )
    kept = frame[~failed.to_numpy()].reset_index(drop=True)
    for column, kind in COLUMNS.items():
        kept[column] = _typed(csv, kept, column, kind)
    if manifest is not None:
        planned = pd.read_csv(manifest, dtype=str, keep_default_na=False)["id"]
        missing += sorted(set(planned) - set(frame["id"]))
    table_header: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "device": header["device"],
        "threads": int(header["threads"]),
        "batch_size": int(header["batch_size"]),
        "date": header["date"],
        "overhead_ms": float(header["overhead_ms"]),
        "reference_ms": float(header["reference_ms"]),
        "source": str(csv),
        "complete": bool(header.get("complete", False)) and not missing,
    }
    coverage = Coverage(len(kept), int((kept["status"] == "noisy").sum()), missing)
    return LatencyTable(kept[list(COLUMNS)], table_header), coverage
