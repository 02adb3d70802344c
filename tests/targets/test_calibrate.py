"""The calibration from a sum of table entries to a whole model's time: fitted on whole models,
it recovers how they were made; with few models it is the global scale; a table applies it."""

import numpy as np
import pandas as pd
import pytest

from edgecompress.targets import calibrate
from edgecompress.targets.calibrate import Calibration, Model, fit
from edgecompress.targets.table import COLUMNS, LatencyTable, Layer

OVERHEAD = 0.004
# how the synthetic device runs each class in a model: a factor on its entry, a cost per node
TRUTH = {
    "Conv|fp32": (1.1, 0.001),
    "QLinearConv|int8": (0.9, 0.002),
    "Transpose|int8": (1.0, 0.003),
}
COLD_CAPACITY_MB, COLD_MS_PER_MB = 1.0, 0.01


def _models(n: int, seed: int) -> list[Model]:
    rng = np.random.default_rng(seed)
    truth = Calibration(classes=TRUTH, capacity_mb=COLD_CAPACITY_MB, ms_per_mb=COLD_MS_PER_MB)
    models = []
    for _ in range(n):
        size = int(rng.integers(3, 12))
        classes = list(rng.choice(sorted(TRUTH), size=size))
        entries = list(rng.uniform(0.001, 0.05, size=size))
        weights = list(rng.uniform(0, 4e5, size=size))
        model = Model(classes, entries, weights)
        models.append(Model(classes, entries, weights, OVERHEAD + truth.apply(model)))
    return models


def test_the_fit_predicts_models_it_did_not_see_as_they_were_made() -> None:
    fitted = fit(_models(80, seed=0), OVERHEAD)
    cal = fitted.calibration
    # the cold-weights term is found, its capacity chosen by cross-validation near the truth
    assert 0.5 <= cal.capacity_mb <= 1.5
    assert cal.ms_per_mb == pytest.approx(COLD_MS_PER_MB, rel=0.25)
    assert set(cal.classes) == set(TRUTH)
    assert fitted.report["cross_validated"]["within_10pct"] == 1.0
    for model in _models(20, seed=1):
        assert OVERHEAD + cal.apply(model) == pytest.approx(model.measured_ms, rel=0.05)
    before, after = fitted.report["median_error_pct"]
    assert after < 3 < before
    # the plain sum with one scale cannot do as well on these models
    plain = Calibration(scale=cal.scale)
    errors = [abs((OVERHEAD + plain.apply(m)) / m.measured_ms - 1) for m in _models(20, seed=1)]
    assert 100 * np.median(errors) > 2 * after


def test_few_models_fit_the_global_scale_alone() -> None:
    models = [
        Model(["Conv|fp32"] * 2, [0.01, 0.02 * k], [0, 0], OVERHEAD + 2 * (0.01 + 0.02 * k))
        for k in range(1, 6)
    ]
    fitted = fit(models, OVERHEAD)
    assert fitted.calibration.scale == pytest.approx(2.0)
    assert fitted.calibration.classes == {} and fitted.calibration.ms_per_mb == 0
    # before: the plain sum; its median model (k = 3) is 0.07 ms of entries measured 0.144 ms
    before = 100 * (1 - (OVERHEAD + 0.07) / (OVERHEAD + 0.14))
    assert fitted.report["median_error_pct"] == pytest.approx([before, 0.0], abs=1e-9)


def test_a_class_no_whole_model_had_keeps_the_global_scale() -> None:
    cal = Calibration(scale=1.5, classes={"Conv|fp32": (2.0, 0.001)})
    model = Model(["Conv|fp32", "Gemm|fp32"], [0.01, 0.02], [0, 0])
    assert cal.apply(model) == pytest.approx(2.0 * 0.01 + 0.001 + 1.5 * 0.02)
    assert Calibration.from_json(cal.to_json()) == cal


def test_a_table_predicts_with_its_calibration() -> None:
    layers = [
        Layer("Conv", "fp32", 8, 16, 1000.0, kernel="3", weights=600_000),
        Layer("Transpose", "int8", 64, 64, 128.0, weights=0),
    ]
    entries = pd.DataFrame(
        [
            {**x.row(), "latency_ms": ms, "p90_ms": ms, "spread_pct": 0.0}
            for x, ms in zip(layers, (0.02, 0.001), strict=True)
        ]
    )[list(COLUMNS)]
    cal = Calibration(
        scale=1.2,
        classes={"Conv|fp32": (1.5, 0.002), "Transpose|int8": (1.0, 0.003)},
        capacity_mb=0.5,
        ms_per_mb=0.01,
        residual_pct=5.0,
    )
    header = {"overhead_ms": OVERHEAD, "calibration": cal.to_json()}
    predicted = LatencyTable(entries, header).predict(layers)
    # by hand: overhead, then each class's factor and node cost, then the cold weights
    # (0.6 MB, a sigmoid at (0.6 - 0.5) / (0.5 / 4) = 0.8)
    cold = 0.6 / (1 + np.exp(-0.8))
    by_hand = OVERHEAD + (1.5 * 0.02 + 0.002) + (1.0 * 0.001 + 0.003) + 0.01 * cold
    assert predicted.latency_ms == pytest.approx(by_hand)
    # the entries' own spread is 0 here: the uncertainty is the calibration's 5% of the model
    assert predicted.uncertainty_ms == pytest.approx(by_hand * 0.05)
    assert calibrate.class_of(layers[0]) == "Conv|fp32"
