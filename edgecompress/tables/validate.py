"""Proving a table: random plans of the space, built and measured end to end, against the
table's prediction; with the noise of the measurement itself (each model measured twice)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from edgecompress.errors import EdgeCompressError
from edgecompress.experiment import Experiment
from edgecompress.plan import InvalidPlan
from edgecompress.spaces import Space
from edgecompress.tables.predict import build_for_latency, predict_file
from edgecompress.targets.runner import Runner
from edgecompress.targets.table import LatencyTable


@dataclass(frozen=True)
class Validation:
    # per sample: plan key, predicted_ms, measured_ms, repeat_ms (the same model measured again,
    # for the measurement's own noise), error_pct
    rows: pd.DataFrame

    def summary(self) -> dict[str, Any]:
        rows = self.rows
        if rows.empty:
            raise EdgeCompressError(
                "no plan of the space could be built for validation (every sample was an "
                "invalid plan); check the space with `edgecompress space`"
            )
        error = (rows["predicted_ms"] - rows["measured_ms"]).abs() / rows["measured_ms"]
        noise = (rows["measured_ms"] - rows["repeat_ms"]).abs() / rows["measured_ms"]
        return {
            "samples": int(len(rows)),
            "within_10pct": float((error <= 0.10).mean()),
            "mape": float(100 * error.mean()),
            "spearman": float(rows["predicted_ms"].corr(rows["measured_ms"], method="spearman")),
            "noise_pct": float(100 * noise.median()),
            "measured_ms_min": float(rows["measured_ms"].min()),
            "measured_ms_max": float(rows["measured_ms"].max()),
        }


def validate(
    experiment: Experiment,
    space: Space,
    table: LatencyTable,
    reference: bytes,
    *,
    samples: int = 50,
    seed: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> Validation:
    """``reference`` is the table's yardstick model (its bundle's ``reference.onnx``): a
    measured latency is the ratio to it times the table's ``reference_ms``, the unit the
    entries were measured in, so the machine's drift since the build cancels."""
    runner = Runner(reference, threads=int(table.header["threads"]))
    unit = float(table.header["reference_ms"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        attempts = 0
        while len(rows) < samples and attempts < 3 * samples:
            attempts += 1
            if progress:
                progress(len(rows), samples)
            trial = study.ask()
            plan = space.sample(trial)
            study.tell(trial, 0.0)
            try:
                model = build_for_latency(experiment, plan, Path(tmp) / str(attempts))
            except InvalidPlan:
                continue
            predicted = predict_file(table, model, experiment)
            first = runner.ratio(model)[0] * unit
            second = runner.ratio(model)[0] * unit
            rows.append(
                {
                    "plan": plan.key,
                    "predicted_ms": predicted.latency_ms,
                    "uncertainty_ms": predicted.uncertainty_ms,
                    "interpolated": predicted.interpolated,
                    "measured_ms": first,
                    "repeat_ms": second,
                }
            )
    frame = pd.DataFrame(rows)
    frame["error_pct"] = 100 * (frame["predicted_ms"] / frame["measured_ms"] - 1)
    return Validation(frame)
