"""From the sum of a table's entries to a whole model's time: the calibration a device's run fits.

A kernel timed alone (its micro-model less its null model) is not what it costs inside a model.
On this machine ORT's profiler and whole-model timings show three differences, and the
calibration has one term for each, fitted on the whole models the same run timed:

- **a factor per kernel class** (op and precision): a kernel's time in context is not its time
  alone (``a``, held near the global scale by a ridge);
- **a cost per node of the class** (``b`` ms, held near 0): the executor's work around every
  node, which a micro-model less its null model does not see (a Transpose or DequantizeLinear
  is ~0 alone and 2-3 us in a graph);
- **cold weights**: a kernel timed alone finds its weights in cache; in a model whose weights
  together exceed the cache, every call reads them from the next level. So a model costs
  ``k`` ms per MB of weights, switched on smoothly as its weights pass a capacity ``C``. ``C``
  is chosen by cross-validation on the whole models, so no cache size has to be known.

    latency = overhead + sum_c (a_c * entries_c + b_c * nodes_c) + k * W * sigmoid(4 (W - C) / C)

A class no whole model contained keeps the global scale and no node cost. With fewer than
``MIN_MODELS`` whole models only the global scale is fitted (the plain scaled sum).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import lsq_linear

if TYPE_CHECKING:
    from edgecompress.targets.table import Layer

MIN_MODELS = 20
FOLDS = 5
# the pull of each class's factor towards the global scale, and of its node cost towards 0 (in
# units of NODE_MS): the strength, like the capacity, is chosen by cross-validation
RIDGES = (0.1, 0.3, 1.0)
NODE_MS = 0.005
COLD_MS_PER_MB = 0.1  # a weak pull of the cold-weights factor towards 0 (~100 GB/s is 0.01)
CAPACITIES_MB = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0)


def class_of(layer: Layer) -> str:
    """The calibration's class of a kernel: its op and precision."""
    return f"{layer.op}|{layer.precision}"


@dataclass(frozen=True)
class Model:
    """One whole model as the calibration sees it: per kernel its class (``op|precision``),
    its table entry (ms) and its weights (bytes); and the model's measured time (ms)."""

    classes: Sequence[str]
    entries: Sequence[float]
    weights: Sequence[float]
    measured_ms: float = float("nan")


@dataclass(frozen=True)
class Calibration:
    scale: float = 1.0  # the global scale: the factor of a class no whole model had
    classes: dict[str, tuple[float, float]] = field(default_factory=dict)  # a (x), b (ms)
    capacity_mb: float = 0.0
    ms_per_mb: float = 0.0
    residual_pct: float = 0.0  # the cross-validated spread of a prediction (relative, %)

    def coefficients(self, cls: str) -> tuple[float, float]:
        """A class's factor and node cost (ms); the global scale and none for a class no whole
        model had."""
        return self.classes.get(cls, (self.scale, 0.0))

    def apply(self, model: Model) -> float:
        """The model's time less the call overhead (ms)."""
        total = 0.0
        for cls, entry in zip(model.classes, model.entries, strict=True):
            a, b = self.coefficients(cls)
            total += a * entry + b
        return total + self.ms_per_mb * _cold(sum(model.weights) / 1e6, self.capacity_mb)

    def to_json(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "classes": {c: list(v) for c, v in sorted(self.classes.items())},
            "capacity_mb": self.capacity_mb,
            "ms_per_mb": self.ms_per_mb,
            "residual_pct": self.residual_pct,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        return cls(
            scale=float(data.get("scale", 1.0)),
            classes={c: (float(a), float(b)) for c, (a, b) in data.get("classes", {}).items()},
            capacity_mb=float(data.get("capacity_mb", 0.0)),
            ms_per_mb=float(data.get("ms_per_mb", 0.0)),
            residual_pct=float(data.get("residual_pct", 0.0)),
        )


@dataclass(frozen=True)
class Fit:
    calibration: Calibration
    report: dict[str, Any]  # models, errors before and after, cross-validated share within 10%


def _cold(weights_mb: float, capacity_mb: float) -> float:
    if capacity_mb <= 0:
        return 0.0
    z = (weights_mb - capacity_mb) / (capacity_mb / 4)
    return weights_mb / (1.0 + math.exp(-min(max(z, -50.0), 50.0)))


def global_scale(models: Sequence[Model], overhead_ms: float) -> float:
    """Least squares through the origin of the sum of entries onto time less overhead."""
    s = np.array([sum(m.entries) for m in models])
    y = np.array([m.measured_ms for m in models]) - overhead_ms
    return float(s @ y / (s @ s)) if s @ s > 0 else 1.0


def fit(models: Sequence[Model], overhead_ms: float) -> Fit:
    """The calibration of ``models`` (each with its measured time), see the module's doc."""
    measured = np.array([m.measured_ms for m in models])
    scale = global_scale(models, overhead_ms)
    plain = Calibration(scale=scale)
    report: dict[str, Any] = {
        "models": len(models),
        "median_error_pct": [_median_error(Calibration(), models, overhead_ms)],
    }
    if len(models) < MIN_MODELS:
        report["median_error_pct"].append(_median_error(plain, models, overhead_ms))
        return Fit(plain, report)
    names = sorted({c for m in models for c in m.classes})
    k = len(names)
    heaviest = max(sum(m.weights) for m in models) / 1e6
    # a capacity above every model's weights leaves the cold term all but zero (and its
    # factor unconstrained)
    capacities = [0.0, *(c for c in CAPACITIES_MB if c < heaviest)]
    best: tuple[tuple[float, float], float, float, np.ndarray] | None = None
    for capacity in capacities:
        design = _design(models, names, capacity)
        for ridge in RIDGES:
            errors = _cross_validated(design, measured, overhead_ms, scale, k, ridge)
            score = (float(np.mean(np.abs(errors) <= 0.10)), -float(np.mean(np.abs(errors))))
            if best is None or score > best[0]:
                best = (score, capacity, ridge, errors)
    assert best is not None
    _, capacity, ridge, errors = best
    solution = _solve(_design(models, names, capacity), measured, overhead_ms, scale, k, ridge)
    calibration = Calibration(
        scale=scale,
        classes={c: (float(solution[i]), float(solution[k + i])) for i, c in enumerate(names)},
        capacity_mb=capacity,
        ms_per_mb=float(solution[-1]) if capacity > 0 else 0.0,
        # the 68th percentile of |error|: a standard deviation that a few outliers don't inflate
        residual_pct=float(100 * np.percentile(np.abs(errors), 68.27)),
    )
    report["median_error_pct"].append(_median_error(calibration, models, overhead_ms))
    report["ridge"] = ridge
    report["cross_validated"] = {
        "within_10pct": float(np.mean(np.abs(errors) <= 0.10)),
        "mape": float(100 * np.mean(np.abs(errors))),
    }
    return Fit(calibration, report)


def _design(models: Sequence[Model], names: list[str], capacity_mb: float) -> np.ndarray:
    """Per model: entries per class, nodes per class, and the cold-weights term."""
    k = len(names)
    where = {c: i for i, c in enumerate(names)}
    x = np.zeros((len(models), 2 * k + 1))
    for row, model in enumerate(models):
        for cls, entry in zip(model.classes, model.entries, strict=True):
            x[row, where[cls]] += entry
            x[row, k + where[cls]] += 1
        x[row, -1] = _cold(sum(model.weights) / 1e6, capacity_mb)
    return x


def _solve(
    x: np.ndarray, measured: np.ndarray, overhead_ms: float, scale: float, k: int, ridge: float
) -> np.ndarray:
    """Non-negative least squares in relative error, with the ridge rows."""
    weight = 1 / measured[:, None]
    rows = np.zeros((2 * k + 1, x.shape[1]))
    rows[:k, :k] = np.eye(k) * math.sqrt(ridge)
    rows[k : 2 * k, k : 2 * k] = np.eye(k) * math.sqrt(ridge) / NODE_MS
    rows[-1, -1] = math.sqrt(ridge) / COLD_MS_PER_MB
    target = np.r_[np.full(k, math.sqrt(ridge) * scale), np.zeros(k + 1)]
    a = np.r_[x * weight, rows]
    y = np.r_[(measured - overhead_ms) * weight[:, 0], target]
    return np.asarray(lsq_linear(a, y, bounds=(0.0, np.inf), method="bvls").x)


def _cross_validated(
    x: np.ndarray, measured: np.ndarray, overhead_ms: float, scale: float, k: int, ridge: float
) -> np.ndarray:
    """Each model's relative error when predicted by a fit on the other folds."""
    errors = np.empty(len(measured))
    fold = np.arange(len(measured)) % FOLDS
    for f in range(FOLDS):
        test = fold == f
        solution = _solve(x[~test], measured[~test], overhead_ms, scale, k, ridge)
        errors[test] = (overhead_ms + x[test] @ solution) / measured[test] - 1
    return errors


def _median_error(calibration: Calibration, models: Sequence[Model], overhead_ms: float) -> float:
    errors = [abs((overhead_ms + calibration.apply(m)) / m.measured_ms - 1) for m in models]
    return float(100 * np.median(errors))


def summary(header: dict[str, Any]) -> str:
    """One line on a table's calibration, from its header."""
    fitted = header.get("calibration")
    if "calibration_skipped" in header:
        return f"not calibrated: {header['calibration_skipped']}"
    if not isinstance(fitted, dict):
        return "no whole models timed: predictions are the plain sum of entries"
    line = f"calibrated on {fitted.get('models', 0)} whole models"
    checked = fitted.get("cross_validated")
    if isinstance(checked, dict):
        line += (
            f": {100 * checked['within_10pct']:.0f}% within +-10% cross-validated "
            f"(MAPE {checked['mape']:.1f}%)"
        )
    else:
        line += f": one scale, {float(header.get('scale', 1.0)):.3f}"
    return line
