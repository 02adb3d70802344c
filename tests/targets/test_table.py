"""Latency tables: round trip, schema checks on import, prediction and interpolation."""

from pathlib import Path

import pandas as pd
import pytest

from edgecompress.targets.table import (
    FORMAT_VERSION,
    LatencyTable,
    Layer,
    TableError,
    load_table,
)

HEADER = {
    "format_version": FORMAT_VERSION,
    "device": {"cpu_model": "test"},
    "threads": 1,
    "batch_size": 1,
    "date": "2026-11-22",
    "overhead_ms": 0.01,
}


def _work(op: str, cin: int, cout: int) -> float:
    return float(cin * cout * (5 * 40 if op == "Conv" else 1))


def _row(op: str, cin: int, cout: int, ms: float, precision: str = "fp32") -> dict:  # type: ignore[type-arg]
    return {
        "op": op,
        "precision": precision,
        "fused": "Relu" if op == "Conv" else "",
        "kernel": "5" if op == "Conv" else "",
        "groups": 1,
        "spatial": "40" if op == "Conv" else "",
        "attrs": "pads=2,2" if op == "Conv" else "transB=1",
        "in_channels": cin,
        "out_channels": cout,
        "work": _work(op, cin, cout),
        "latency_ms": ms,
        "p90_ms": ms * 1.1,
        "spread_pct": 2.0,
    }


def _table() -> LatencyTable:
    rows = [
        _row("Conv", 64, 64, 0.10),
        _row("Conv", 64, 128, 0.18),
        _row("Conv", 64, 256, 0.40),
        _row("Conv", 64, 256, 0.12, precision="int8"),
        _row("Gemm", 512, 10, 0.02),
    ]
    return LatencyTable(pd.DataFrame(rows), dict(HEADER))


def _conv(cout: int, precision: str = "fp32") -> Layer:
    return Layer(
        "Conv",
        precision,
        64,
        cout,
        _work("Conv", 64, cout),
        kernel="5",
        spatial="40",
        fused="Relu",
        attrs="pads=2,2",
    )


def test_a_table_round_trips_through_csv_and_a_json_header(tmp_path: Path) -> None:
    table = _table()
    csv, meta = table.save(tmp_path / "local-cpu")
    assert csv.suffix == ".csv" and meta.suffix == ".json"
    again = load_table(tmp_path / "local-cpu")
    pd.testing.assert_frame_equal(again.entries, table.entries, check_dtype=False)
    assert again.header == table.header


def test_prediction_is_the_sum_of_entries_plus_the_overhead() -> None:
    gemm = Layer("Gemm", "fp32", 512, 10, 5120.0, attrs="transB=1")
    layers = [_conv(64), _conv(256, "int8"), gemm]
    prediction = _table().predict(layers)
    assert prediction.latency_ms == pytest.approx(0.01 + 0.10 + 0.12 + 0.02)
    assert prediction.interpolated == 0
    assert prediction.uncertainty_ms > 0


def test_interpolation_across_widths_is_monotone_and_between_its_neighbours() -> None:
    table = _table()
    widths = list(range(32, 400, 8))
    latencies = [table.predict([_conv(w)]).latency_ms for w in widths]
    assert all(b >= a for a, b in zip(latencies, latencies[1:], strict=False))
    between = table.predict([_conv(96)])
    assert 0.01 + 0.10 < between.latency_ms < 0.01 + 0.18 and between.interpolated == 1
    assert table.predict([_conv(96)]).uncertainty_ms > table.predict([_conv(64)]).uncertainty_ms


def test_a_kind_the_table_never_measured_is_an_error_not_a_guess() -> None:
    with pytest.raises(TableError, match="no entry of the kind"):
        _table().predict([_conv(64, "fp16")])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.drop(columns=["latency_ms"]), r"missing columns \['latency_ms'\]"),
        (
            lambda f: f.assign(latency_ms=["0.1", "0.2", "fast", "0.1", "0.1"]),
            r"row 3, column 'latency_ms': 'fast' is not a number",
        ),
        (
            lambda f: f.assign(out_channels=[64, 128, -256, 256, 10]),
            r"row 3, column 'out_channels': -256 must be a finite number >= 0",
        ),
    ],
)
def test_import_refuses_a_malformed_file_naming_the_column_and_row(
    tmp_path: Path,
    edit,  # type: ignore[no-untyped-def]
    message: str,
) -> None:
    csv, _ = _table().save(tmp_path / "device")
    edit(pd.read_csv(csv)).to_csv(csv, index=False)
    with pytest.raises(TableError, match=message):
        load_table(tmp_path / "device")


def test_import_refuses_a_bad_header(tmp_path: Path) -> None:
    _, meta = _table().save(tmp_path / "device")
    meta.write_text('{"format_version": 99}')
    with pytest.raises(TableError, match="missing keys"):
        load_table(tmp_path / "device")
    meta.write_text(pd.Series({**HEADER, "format_version": 99}).to_json())
    with pytest.raises(TableError, match="format_version 99"):
        load_table(tmp_path / "device")
    with pytest.raises(TableError, match="no such file"):
        load_table(tmp_path / "absent")
