"""Searching with a target's table: latency from the table, screening, re-costing."""

import importlib
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from edgecompress import search
from edgecompress.errors import EdgeCompressError
from edgecompress.search import open_result
from edgecompress.search.engine import checked_reference, space_of
from edgecompress.search.recost import recost
from edgecompress.tables.bundle import write_bundle
from edgecompress.targets import describe_device
from edgecompress.targets.imports import read_run
from edgecompress.targets.profile import load_profile, save_profile
from edgecompress.targets.target import Target

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny():  # type: ignore[no-untyped-def]
    from edgecompress import load_experiment

    return load_experiment(f"{Path(__file__).parents[1] / 'tiny_experiment.py'}:experiment")


# an imagined device: float convolutions and matrix products slow, every other kernel fast, so
# fp32 plans miss a budget int8 ones meet
SLOW = ("Conv", "com.microsoft:FusedConv", "Gemm", "com.microsoft:FusedGemm", "MatMul")


@pytest.fixture(scope="module")
def kernels_of_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tiny = _tiny()
    out = tmp_path_factory.mktemp("bundle") / "b"
    write_bundle(tiny, space_of(tiny, checked_reference(tiny)), out, levels=2, random=6, whole=0)
    return out


def _device(bundle: Path, root: Path, name: str, scale: float, cpu: str) -> None:
    rows = pd.read_csv(bundle / "manifest.csv", dtype=str, keep_default_na=False)
    ms = [(1.0 if op in SLOW else 0.02) * scale for op in rows["op"]]
    rows = rows.assign(latency_ms=ms, p90_ms=ms, spread_pct=1.0, status="ok")
    run = root / f"{name}-run.csv"
    rows.to_csv(run, index=False)
    header = {
        "device": {"cpu_model": cpu},
        "threads": 1,
        "batch_size": 1,
        "date": "2026-11-22",
        "reference_ms": 1.0,
        "overhead_ms": 0.01,
        "complete": True,
    }
    run.with_suffix(".json").write_text(pd.Series(header).to_json())
    table, _ = read_run(run)
    save_profile(Target(name=name), table, None, root / "targets")


def _on_slow_float(tiny, storage: str, **kw: object):  # type: ignore[no-untyped-def]
    """A search priced from the slow-float table at a budget its float kernels miss: 6 trials,
    the 5 baselines and seeds of the TPE strategy (never screened) and one sampled plan."""
    return search(
        tiny,
        strategy="tpe",
        trials=6,
        speedup=3.0,
        storage=storage,
        progress=False,
        target="slow-float",
        targets="targets",
        **kw,  # type: ignore[arg-type]
    )


def test_screening_never_trains_a_plan_predicted_over_budget(
    tiny,  # type: ignore[no-untyped-def]
    kernels_of_tiny: Path,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _device(kernels_of_tiny, workdir, "slow-float", 1.0, "Cortex-A53")
    trained: list[str] = []
    trial_module = importlib.import_module("edgecompress.search.trial")
    real = trial_module.compress

    def recording(experiment, plan, workdir, **kw):  # type: ignore[no-untyped-def]
        trained.append(plan.key)
        return real(experiment, plan, workdir, **kw)

    monkeypatch.setattr(trial_module, "compress", recording)
    result = _on_slow_float(tiny, "sqlite:///s.db")
    study = optuna.load_study(study_name="tiny", storage="sqlite:///s.db")
    screened = [t for t in study.trials if t.user_attrs.get("screened")]
    # a sampled plan with a float convolution or matrix product misses the budget here
    assert screened
    for t in screened:
        assert t.state == optuna.trial.TrialState.PRUNED
        assert t.user_attrs["plan_key"] not in trained  # never compressed, never fine-tuned
        assert t.user_attrs["predicted_latency_ms"] > result.budget_ms
        assert t.constraints["latency_budget"] > 0  # infeasible, as the sampler sees it
    # screened plans do not count as trials: 6 were trained and recorded
    assert len(result.trials) == 6 and len(trained) == 6
    teacher = result.trials.set_index("baseline").loc["teacher"]
    assert not teacher["feasible"]  # over budget, but a baseline: trained, never screened
    assert result.meta.costing["latency"] == "table"  # another device: no live latency
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:  # latency is the table's prediction
            assert t.user_attrs["latency_ms"] == t.user_attrs["predicted_latency_ms"]
    assert result.screening["screened"] == len(screened)


def test_recosting_for_another_target_changes_latency_not_accuracy(
    tiny,  # type: ignore[no-untyped-def]
    kernels_of_tiny: Path,
    workdir: Path,
) -> None:
    _device(kernels_of_tiny, workdir, "dev-a", 1.0, "Cortex-A53")
    _device(kernels_of_tiny, workdir, "dev-b", 2.0, "Cortex-A53")
    search(
        tiny,
        trials=3,
        speedup=2.0,
        storage="sqlite:///r.db",
        progress=False,
        target="dev-a",
        targets="targets",
        screen=False,
    )
    result = open_result("tiny", "sqlite:///r.db")
    other = recost(result, tiny, load_profile("dev-b", "targets"))
    before, after = result.trials.set_index("trial"), other.trials.set_index("trial")
    pd.testing.assert_series_equal(before["accuracy"], after["accuracy"])
    pd.testing.assert_series_equal(before["size_mb"], after["size_mb"])
    ratio = (after["latency_ms"] - 0.01) / (before["latency_ms"] - 0.01)
    assert ratio.to_numpy() == pytest.approx(2.0, rel=1e-6)  # every entry twice as slow
    # the budget is the study's speedup over the teacher as predicted on dev-b
    assert other.budget_ms == pytest.approx(2 * result.budget_ms - 0.005, rel=1e-6)
    assert other.meta.recosted_for == "dev-b"


def test_live_latency_is_refused_for_another_device(
    tiny, kernels_of_tiny: Path, workdir: Path
) -> None:  # type: ignore[no-untyped-def]
    _device(kernels_of_tiny, workdir, "pi", 1.0, "Cortex-A53")
    assert describe_device()["cpu_model"] != "Cortex-A53"
    with pytest.raises(EdgeCompressError, match="another device.*--latency table"):
        search(
            tiny,
            trials=1,
            speedup=2.0,
            storage="sqlite:///x.db",
            progress=False,
            target="pi",
            targets="targets",
            latency="live",
        )
    with pytest.raises(EdgeCompressError, match="no target 'nowhere'.*pi"):
        search(
            tiny,
            trials=1,
            speedup=2.0,
            storage="sqlite:///x.db",
            progress=False,
            target="nowhere",
            targets="targets",
        )


def test_a_resumed_study_keeps_its_latency_source_and_its_correction_does_not_compound(
    tiny,  # type: ignore[no-untyped-def]
    kernels_of_tiny: Path,
    workdir: Path,
) -> None:
    here = describe_device()["cpu_model"]  # a table "of this machine": live latency allowed
    _device(kernels_of_tiny, workdir, "local-cpu", 1.0, here)
    kw = {
        "speedup": 1.2,
        "storage": "sqlite:///c.db",
        "progress": False,
        "targets": "targets",
        "strategy": "tpe",
    }
    first = search(tiny, trials=2, **kw)  # type: ignore[arg-type]
    assert first.meta.costing["latency"] == "live"
    record = first.meta.residuals
    assert record["trials"], "the front is re-measured live against the table"
    correction = first.meta.costing["correction"]
    # the correction is the front's live ms per table ms: set, not multiplied, on each run
    expected = np.median([r["live_ms"] / r["table_ms"] for r in record["trials"].values()])
    assert correction == pytest.approx(expected)
    again = search(tiny, trials=2, **kw)  # type: ignore[arg-type]  # nothing left to train
    rows = again.meta.residuals["trials"].values()
    # the table ms of a trial are its own, whatever correction screening used meanwhile
    assert [r["table_ms"] for r in rows] == [r["table_ms"] for r in record["trials"].values()]
    expected = np.median([r["live_ms"] / r["table_ms"] for r in rows])
    assert again.meta.costing["correction"] == pytest.approx(expected)
    with pytest.raises(EdgeCompressError, match="takes its latency live"):
        search(tiny, trials=2, latency="table", **kw)  # type: ignore[arg-type]


def test_a_search_on_ray_costs_and_screens_from_the_table(
    tiny,  # type: ignore[no-untyped-def]
    kernels_of_tiny: Path,
    workdir: Path,
) -> None:
    """The Ray path: the costing travels to the workers, which price and screen from the
    target's table as the in-process path does."""
    _device(kernels_of_tiny, workdir, "slow-float", 1.0, "Cortex-A53")
    result = _on_slow_float(tiny, "sqlite:///ray-table.db", workers=2)
    study = optuna.load_study(study_name="tiny", storage="sqlite:///ray-table.db")
    assert result.meta.costing["latency"] == "table"
    screened = [t for t in study.trials if t.user_attrs.get("screened")]
    assert screened and all(t.state == optuna.trial.TrialState.PRUNED for t in screened)
    assert all(t.constraints["latency_budget"] > 0 for t in screened)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == len(result.trials) == 6
    for t in done:  # priced by the workers from the table, not measured
        assert t.user_attrs["latency_ms"] == t.user_attrs["predicted_latency_ms"]
