"""The ``table`` commands: build here and validate, import a device's run, errors named."""

import json
from pathlib import Path

import pandas as pd
import pytest

from edgecompress import EdgeCompressError
from edgecompress.cli import EXIT_BAD_INPUT, main
from edgecompress.cli_table import _space
from edgecompress.tables import validate as validate_module
from edgecompress.tables.validate import Validation
from edgecompress.targets.profile import load_profile

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = f"{Path(__file__).parents[1] / 'tiny_experiment.py'}:experiment"


def test_build_then_validate_on_this_machine(
    workdir: Path,
    capsys: pytest.CaptureFixture,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = ["--experiment", TINY, "--targets", "targets"]
    assert main(["table", "build", "--levels", "2", "--random", "1", "--whole", "3", *args]) == 0
    out = capsys.readouterr().out
    assert "target local-cpu" in out and "(complete)" in out
    # 3 whole models timed: too few for the full calibration, one scale is fitted on them
    assert "calibrated on 3 whole models: one scale" in out
    whole = workdir / "targets" / "local-cpu" / "build" / "device-whole.csv"
    assert whole.read_text().count("\n") == 4  # the header and 3 models, each timed once
    profile = load_profile("local-cpu", "targets")
    assert profile.table is not None and profile.reference.is_file()
    assert profile.table.header["device"]["onnxruntime"]
    rows = len(profile.table.entries)
    device = workdir / "targets" / "local-cpu" / "build" / "device.csv"
    lines = device.read_text().count("\n")

    # a second build goes on from what is there: nothing left to measure, nothing repeated
    assert main(["table", "build", "--levels", "2", "--random", "1", "--whole", "3", *args]) == 0
    assert len(load_profile("local-cpu", "targets").table.entries) == rows  # type: ignore[union-attr]
    assert device.read_text().count("\n") == lines  # no kernel measured twice
    assert whole.read_text().count("\n") == 4  # no whole model timed twice
    capsys.readouterr()

    code = main(["table", "validate", "--samples", "3", "--format", "json", *args])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == 3
    assert 0.0 <= summary["within_10pct"] <= 1.0
    assert summary["mape"] >= 0 and summary["noise_pct"] >= 0
    assert 0.0 <= summary["repeat_within_10pct"] <= 1.0
    assert -1.0 <= summary["spearman"] <= 1.0
    assert main(["table", "validate", "--samples", "0", *args]) == EXIT_BAD_INPUT
    assert "--samples 0" in capsys.readouterr().err

    # the repeat is measured in another process: a stub runner in this one does not reach it
    class Fixed:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def ratio(self, model: object) -> tuple[float, float, float]:
            return 1.0, 1.0, 0.0

    monkeypatch.setattr(validate_module, "Runner", Fixed)
    experiment, space = _space(TINY)
    profile = load_profile("local-cpu", "targets")
    assert profile.table is not None
    rows = validate_module.validate(
        experiment, space, profile.table, profile.reference.read_bytes(), samples=2
    ).rows
    unit = profile.table.header["reference_ms"]
    assert len(rows) == 2 and (rows["measured_ms"] == unit).all()  # this process: the stub
    assert (rows["repeat_ms"] > 0).all() and (rows["repeat_ms"] != unit).all()


def test_import_writes_a_target_and_validate_refuses_another_device(
    workdir: Path,
    capsys: pytest.CaptureFixture,  # type: ignore[type-arg]
) -> None:
    bundle = workdir / "bundle"
    assert (
        main(
            [
                "table",
                "plan",
                "--experiment",
                TINY,
                "--levels",
                "2",
                "--random",
                "0",
                "--whole",
                "0",
                "-o",
                str(bundle),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "run.py -o device.csv" in out
    assert "(0 could not be built), 0 models to time whole" in out
    assert json.loads((bundle / "bundle.json").read_text())["failed_whole"] == 0

    rows = pd.read_csv(bundle / "manifest.csv", dtype=str, keep_default_na=False)
    rows.assign(latency_ms=0.01, p90_ms=0.01, spread_pct=1.0, status="ok").to_csv(
        workdir / "device.csv", index=False
    )
    header = {
        "device": {"cpu_model": "Cortex-A76", "onnxruntime": "1.20.0"},
        "threads": 1,
        "batch_size": 1,
        "date": "2026-11-22",
        "reference_ms": 0.02,
        "overhead_ms": 0.004,
    }
    (workdir / "device.json").write_text(json.dumps(header))
    code = main(
        [
            "table",
            "import",
            "device.csv",
            "--target",
            "my-pi",
            "--bundle",
            str(bundle),
            "--targets",
            "targets",
        ]
    )
    assert code == 0
    assert "Cortex-A76" in capsys.readouterr().out
    profile = load_profile("my-pi", "targets")
    assert profile.table is not None and len(profile.table.entries) == len(rows)

    code = main(
        ["table", "validate", "--target", "my-pi", "--targets", "targets", "--experiment", TINY]
    )
    assert code == EXIT_BAD_INPUT
    assert "measured on 'Cortex-A76'" in capsys.readouterr().err

    (workdir / "device.csv").write_text("id,op\nk0,Conv\n")
    code = main(["table", "import", "device.csv", "--target", "bad", "--targets", "targets"])
    assert code == EXIT_BAD_INPUT
    assert "missing columns" in capsys.readouterr().err
    assert not (workdir / "targets" / "bad").exists()  # nothing written


def test_validation_reports_how_often_two_measurements_agree() -> None:
    rows = pd.DataFrame(
        {
            "predicted_ms": [1.0, 1.02, 0.99, 1.01],
            "measured_ms": [1.05, 1.2, 0.95, 1.0],
            "repeat_ms": [1.0, 1.2, 1.1, 1.02],  # 5%, 0%, 15.8%, 2% apart
        }
    )
    summary = Validation(rows).summary()
    assert summary["within_10pct"] == 0.75  # 1.02 is 15% under 1.2
    assert summary["repeat_within_10pct"] == 0.75  # 0.95 against 1.1 is not
    assert summary["noise_pct"] == pytest.approx(100 * (0.05 / 1.05 + 0.02) / 2)
    # a quarter of the repeats more than 10% apart: too noisy to judge the table by
    assert summary["verdict"] is None and "no verdict" in summary["refused"]
    assert "within +-10% for 75%" in summary["refused"]
    quiet = rows.assign(repeat_ms=rows["measured_ms"] * 1.01)
    judged = Validation(quiet).summary()
    assert judged["refused"] is None
    assert judged["verdict"] == "75% of the plans predicted within +-10% of measured"
    with pytest.raises(EdgeCompressError, match="no plan of the space could be built"):
        Validation(rows.iloc[:0]).summary()
