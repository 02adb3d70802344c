"""A bundle measured in a separate process as if on another device, imported as a target;
runs that are interrupted resume; malformed runs are refused with the column and row named."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from edgecompress.plan import Plan
from edgecompress.search.engine import checked_reference, space_of
from edgecompress.spaces import baseline_params
from edgecompress.tables import bundle as bundle_module
from edgecompress.tables.bundle import KEY_COLUMNS, enumerate_plans, latency_plan, write_bundle
from edgecompress.tables.predict import predict_plan
from edgecompress.targets.imports import _layers, _priced, read_run
from edgecompress.targets.profile import load_profile, save_profile
from edgecompress.targets.table import TableError
from edgecompress.targets.target import Target

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny():  # type: ignore[no-untyped-def]
    from edgecompress import load_experiment

    return load_experiment(f"{Path(__file__).parents[1] / 'tiny_experiment.py'}:experiment")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tiny = _tiny()
    out = tmp_path_factory.mktemp("bundle") / "b"
    space = space_of(tiny, checked_reference(tiny))
    made = write_bundle(tiny, space, out, levels=2, random=2, whole=4)
    return made, space


def _run(bundle_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    # only onnxruntime and numpy: the runner is a file of its own, run by path
    return subprocess.run(
        [sys.executable, str(bundle_dir / "run.py"), "-o", str(out), *extra],
        capture_output=True,
        text=True,
        check=True,
        cwd=bundle_dir.parent,
    )


def test_the_space_is_enumerated_at_every_level_and_precision(tiny) -> None:  # type: ignore[no-untyped-def]
    space = space_of(tiny, checked_reference(tiny))
    plans = enumerate_plans(space, levels=3, random=0)
    prune = {p.get("prune.conv1") for p in plans}
    assert {0.0} < prune and len(prune) >= 3  # uncompressed, half way, most compressed
    bits = {p.get("bits.fc") for p in plans}
    assert {32, 8} <= bits
    assert {p.get("method.quant") for p in plans} >= {"static", "dynamic"}
    assert all(p.get("finetune.epochs") == 0 for p in plans)  # built for latency, not trained
    fixed = optuna.trial.FixedTrial(baseline_params(space, "teacher"))
    teacher = latency_plan(space.sample(fixed))  # type: ignore[arg-type]
    assert teacher.key in {p.key for p in plans}  # the uncompressed model is measured too
    assert len({p.key for p in plans}) == len(plans)


def test_a_bundle_run_elsewhere_imports_as_a_target_and_predicts(
    bundle,  # type: ignore[no-untyped-def]
    tiny,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    made, space = bundle
    manifest = pd.read_csv(made.path / "manifest.csv", keep_default_na=False)
    assert len(manifest) == made.micro_models > 5
    assert manifest["id"].is_unique
    for name in ("run.py", "reference.onnx", "overhead.onnx", "bundle.json"):
        assert (made.path / name).is_file()

    device = tmp_path / "device.csv"
    # a time limit stops the run part-way; run again, it goes on without repeating a row
    first = _run(made.path, device, "--time-limit", "0.5")
    assert "partial" in first.stdout
    partial = pd.read_csv(device, keep_default_na=False)
    assert 0 < len(partial) < len(manifest)
    second = _run(made.path, device)
    assert "complete" in second.stdout
    done = pd.read_csv(device, keep_default_na=False)
    assert sorted(done["id"]) == sorted(manifest["id"])
    assert json.loads(device.with_suffix(".json").read_text())["complete"] is True

    table, coverage = read_run(device, manifest=made.path / "manifest.csv")
    assert coverage.missing == [] and coverage.rows == len(manifest)
    whole = pd.read_csv(made.path / "whole.csv")
    assert table.header["calibration"]["models"] == len(whole) > 2  # timed whole, too
    assert table.header["scale"] > 0
    assert (table.entries["latency_ms"] >= 0).all()
    profile = save_profile(Target(name="pi"), table, None, tmp_path / "targets")
    again = load_profile("pi", tmp_path / "targets")
    assert again.table is not None and again.target.name == "pi"
    plan = space.sample(optuna.trial.FixedTrial(baseline_params(space, "int8")))
    prediction = predict_plan(again.table, tiny, plan)
    assert prediction.latency_ms > table.header["overhead_ms"] > 0
    assert profile.folder == tmp_path / "targets" / "pi"


def _write_run(tmp_path: Path, rows: pd.DataFrame, header: dict) -> Path:  # type: ignore[type-arg]
    out = tmp_path / "run.csv"
    rows.to_csv(out, index=False)
    out.with_suffix(".json").write_text(json.dumps(header))
    return out


def _measured(bundle_dir: Path) -> pd.DataFrame:
    rows = pd.read_csv(bundle_dir / "manifest.csv", dtype=str, keep_default_na=False)
    return rows.assign(latency_ms="0.01", p90_ms="0.012", spread_pct="3", status="ok")


HEADER = {
    "device": {"cpu_model": "Cortex-A76"},
    "threads": 1,
    "batch_size": 1,
    "date": "2026-11-22",
    "reference_ms": 0.02,
    "overhead_ms": 0.005,
    "complete": True,
}


def test_import_refuses_a_malformed_run_naming_the_column_and_row(bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    made, _ = bundle
    rows = _measured(made.path)
    bad = rows.copy()
    bad.loc[0, ["latency_ms", "status"]] = ["", "failed: no kernel"]  # rows keep their numbers
    bad.loc[1, "latency_ms"] = "1,5"
    with pytest.raises(TableError, match=r"row 2, column 'latency_ms': '1,5' is not a number"):
        read_run(_write_run(tmp_path, bad, HEADER))
    with pytest.raises(TableError, match=r"missing columns \['work'\]"):
        read_run(_write_run(tmp_path, rows.drop(columns=["work"]), HEADER))
    strange = rows.copy()
    strange.loc[2, "status"] = "maybe"
    with pytest.raises(TableError, match=r"row 3, column 'status': 'maybe'"):
        read_run(_write_run(tmp_path, strange, HEADER))
    with pytest.raises(TableError, match=r"missing keys \['reference_ms'\]"):
        read_run(
            _write_run(tmp_path, rows, {k: v for k, v in HEADER.items() if k != "reference_ms"})
        )


def test_failed_and_absent_rows_are_reported_missing_not_guessed(bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    made, _ = bundle
    rows = _measured(made.path)
    rows.loc[0, ["latency_ms", "p90_ms", "spread_pct", "status"]] = [
        "",
        "",
        "",
        "failed: NOT_IMPLEMENTED: MatMulNBits",
    ]
    run = _write_run(tmp_path, rows.drop(index=[1]), HEADER)
    table, coverage = read_run(run, manifest=made.path / "manifest.csv")
    ids = rows["id"].tolist()
    assert coverage.missing[0].startswith(f"{ids[0]} (failed: NOT_IMPLEMENTED")
    assert ids[1] in coverage.missing
    assert coverage.rows == len(rows) - 2 == len(table.entries)
    assert table.header["complete"] is False
    assert "2 missing" in coverage.summary()


def test_few_whole_models_fit_the_global_scale_on_the_sum_of_entries(
    bundle,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    made, _ = bundle
    run = _write_run(tmp_path, _measured(made.path), HEADER)  # every entry 0.01 ms
    plain, _ = read_run(run)  # no whole-model file: the plain sum of entries
    assert plain.header["scale"] == 1.0 and "calibration" not in plain.header
    whole = pd.read_csv(made.path / "whole.csv", dtype=str)
    # the kernels' keys travel with each whole model; each took twice the sum of its entries
    # (as the table prices them, measured or interpolated), plus the call overhead
    sums = whole["layers"].map(lambda text: sum(_priced(_layers(text), plain).entries))
    overhead = HEADER["overhead_ms"]
    whole.assign(latency_ms=overhead + 2 * sums, spread_pct=1.0).to_csv(
        tmp_path / "run-whole.csv", index=False
    )
    table, _ = read_run(run)
    assert table.header["scale"] == pytest.approx(2.0)
    before, after = table.header["calibration"]["median_error_pct"]
    expected = 100 * (1 - (overhead + sums) / (overhead + 2 * sums)).median()
    assert before == pytest.approx(expected) and after == pytest.approx(0.0, abs=1e-9)
    layers = [table_layer(table, i) for i in range(3)]
    assert table.predict(layers).latency_ms == pytest.approx(overhead + 2 * 0.03)
    # a whole-model file that is not the bundle's is refused, naming the column and row
    whole.assign(latency_ms="fast").to_csv(tmp_path / "run-whole.csv", index=False)
    with pytest.raises(TableError, match=r"row 1, column 'latency_ms'"):
        read_run(run)
    whole.assign(latency_ms=1.0).drop(columns="layers").to_csv(
        tmp_path / "run-whole.csv", index=False
    )
    with pytest.raises(TableError, match=r"missing columns \['layers'\]"):
        read_run(run)
    # an older bundle's whole-model file (kernel ids, not keys) imports, uncalibrated, and says so
    whole.assign(latency_ms=1.0).rename(columns={"layers": "kernels"}).to_csv(
        tmp_path / "run-whole.csv", index=False
    )
    old, _ = read_run(run)
    assert old.header["scale"] == 1.0 and "older bundle" in old.header["calibration_skipped"]


def table_layer(table, i: int):  # type: ignore[no-untyped-def]
    from edgecompress.targets.table import COLUMNS, Layer

    row = table.entries.iloc[i]
    return Layer(**{c: row[c] for c in COLUMNS if c not in ("latency_ms", "p90_ms", "spread_pct")})


def test_many_whole_models_fit_the_full_calibration_which_a_saved_target_predicts_with(
    bundle,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """Whole models made by a known rule (per class a factor and a node cost, over the table's
    own entries): the import fits it, skipping what cannot calibrate, and a target saved and
    loaded again predicts with it."""
    from edgecompress.targets.calibrate import class_of

    made, _ = bundle
    rows = _measured(made.path)
    rng = np.random.default_rng(0)
    rows["latency_ms"] = [f"{v:.5f}" for v in rng.uniform(0.002, 0.05, len(rows))]
    run = _write_run(tmp_path, rows, HEADER)
    plain, _ = read_run(run)
    layers = [
        {**{k: plain.entries.iloc[i][k] for k in KEY_COLUMNS}, "weights": 1000}
        for i in range(len(plain.entries))
    ]
    layers = [{k: (v.item() if hasattr(v, "item") else v) for k, v in x.items()} for x in layers]
    factor = {class_of(_layer(x)): 1.0 + 0.5 * (i % 2) for i, x in enumerate(layers)}
    overhead = HEADER["overhead_ms"]
    models = []
    for i in range(60):
        chosen = [layers[j] for j in rng.choice(len(layers), size=6)]
        ms = overhead + sum(
            factor[class_of(_layer(x))] * plain.entry(_layer(x))[0] + 0.001 for x in chosen
        )
        models.append({"id": f"w{i:03d}", "layers": json.dumps(chosen), "latency_ms": ms})
    unknown = dict(layers[0], op="NoSuchKernel")
    models.append({"id": "w900", "layers": json.dumps([unknown]), "latency_ms": 1.0})
    models.append({"id": "w901", "layers": json.dumps(layers[:2]), "latency_ms": ""})
    frame = pd.DataFrame(models).assign(spread_pct=1.0, status="ok")
    frame.loc[frame["id"] == "w901", "status"] = "failed: NOT_IMPLEMENTED"
    frame.to_csv(tmp_path / "run-whole.csv", index=False)

    table, _ = read_run(run)
    fitted = table.header["calibration"]
    assert fitted["models"] == 60  # the unknown kind and the failed model are left out
    assert fitted["cross_validated"]["within_10pct"] == 1.0
    save_profile(Target(name="calibrated"), table, None, tmp_path / "targets")
    again = load_profile("calibrated", tmp_path / "targets").require_table()
    assert again.calibration == table.calibration
    for model in models[:60]:
        chosen = [_layer(x) for x in json.loads(model["layers"])]
        assert again.predict(chosen).latency_ms == pytest.approx(model["latency_ms"], rel=0.10)
    # a row whose time is not a positive number is refused, naming the row and column
    frame.loc[0, "latency_ms"] = "-1"
    frame.to_csv(tmp_path / "run-whole.csv", index=False)
    with pytest.raises(TableError, match=r"row 1, column 'latency_ms'"):
        read_run(run)


def _layer(fields: dict):  # type: ignore[no-untyped-def,type-arg]
    from edgecompress.targets.table import Layer

    return Layer(**fields)


def test_a_whole_model_that_cannot_be_built_is_counted_apart_from_the_enumeration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = _tiny()
    space = space_of(tiny, checked_reference(tiny))
    real = bundle_module.random_plans

    def one_bad(space, count, *, seed):  # type: ignore[no-untyped-def]
        plans = real(space, count, seed=seed)
        if seed == tiny.seed + bundle_module.WHOLE_SEED:  # the whole models' plans only
            plans[0] = Plan({"prune.nosuch": 0.5})
        return plans

    monkeypatch.setattr(bundle_module, "random_plans", one_bad)
    made = write_bundle(tiny, space, tmp_path / "b", levels=2, random=0, whole=2)
    assert made.failed_plans == []
    assert len(made.failed_whole) == 1 and "nosuch" in made.failed_whole[0]
    assert made.whole_models == 1
    meta = json.loads((made.path / "bundle.json").read_text())
    assert (meta["failed_plans"], meta["failed_whole"], meta["whole_models"]) == (0, 1, 1)
    assert len(pd.read_csv(made.path / "whole.csv")) == 1
