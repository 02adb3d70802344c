"""After a search: the front re-measured live against the table (residuals), and a finished
study re-costed for another target's table without retraining."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from edgecompress.evaluators import measure_absolute_ms, measure_ratio
from edgecompress.experiment import Experiment
from edgecompress.gate import CpuGate
from edgecompress.search.costing import Costing
from edgecompress.search.front import Result, download, load_result
from edgecompress.search.meta import read, update
from edgecompress.search.trial import Reference, reference_of
from edgecompress.tables.predict import predict_file
from edgecompress.targets import describe_device
from edgecompress.targets.profile import Profile


def remeasure_front(
    study: optuna.Study, experiment: Experiment, reference: Reference
) -> dict[str, Any] | None:
    """Measures the front's trials live and records, in the study, each one's residual
    (measured / predicted) and their median; a live study's correction absorbs the median.
    Nothing is done unless the study has a table measured on this machine."""
    stored = read(study).costing
    costing = Costing.from_dict(dict(stored)) if stored else None
    here = describe_device()["cpu_model"]
    if costing is None or costing.table.header["device"].get("cpu_model") != here:
        return None  # decided from the study's settings, before its trials are loaded
    result = load_result(study)
    gate = CpuGate()
    threads = result.meta.threads
    with gate.measure():
        teacher_ms = (
            result.meta.reference_latency_ms
            if costing.latency == "live"
            else measure_absolute_ms(reference.onnx, reference.feed, threads=threads)
        )
    rows: dict[str, dict[str, float]] = {}
    front = result.front()
    with tempfile.TemporaryDirectory() as tmp:
        for _, trial in front.iterrows():
            number = int(trial["trial"])
            predicted, raw = _predicted(study, number, costing)
            if predicted is None or raw is None:
                continue
            model = download(result, number, Path(tmp) / f"{number}.onnx")
            with gate.measure():
                m = measure_ratio(model, reference.onnx, reference.feed, threads=threads)
            live = m.ratio * teacher_ms
            rows[str(number)] = {
                "live_ms": live,
                "predicted_ms": predicted,
                "residual": live / predicted,
                "table_ms": raw,  # the table's own milliseconds, before any correction
            }
    if not rows:
        return None
    median = float(np.median([r["residual"] for r in rows.values()]))
    record = {"trials": rows, "median_residual": median, "latency": costing.latency}
    changes: dict[str, Any] = {"residuals": record}
    if costing.latency == "live":  # later predictions (screening on resume) use it
        # set from the table's own numbers, not multiplied: a resume re-measuring the same
        # trials gives the same correction again
        factor = float(np.median([r["live_ms"] / r["table_ms"] for r in rows.values()]))
        changes["costing"] = replace(costing, correction=factor).to_dict()
    update(study, **changes)
    return record


def _predicted(
    study: optuna.Study, number: int, costing: Costing
) -> tuple[float | None, float | None]:
    """The trial's prediction as recorded, and the table's own (uncorrected) milliseconds."""
    attrs = study.trials[number].user_attrs
    predicted = attrs.get("predicted_latency_ms")
    if predicted is None:
        return None, None
    raw = attrs.get("table_latency_ms", float(predicted) / costing.correction)
    return float(predicted), float(raw)


def recost(
    result: Result, experiment: Experiment, profile: Profile, *, budget_ms: float | None = None
) -> Result:
    """The study's trials with latency and feasibility from ``profile``'s table: metrics,
    size and plans unchanged. The budget: ``budget_ms``, else the study's speedup applied to
    the uncompressed model's prediction on that target, else the study's budget in ms."""
    table = profile.require_table()
    reference = reference_of(experiment)
    teacher = predict_file(table, reference.onnx, experiment).latency_ms
    if budget_ms is None:
        speedup = result.meta.speedup
        budget_ms = teacher / float(speedup) if speedup else result.meta.budget_ms
    frame = result.trials.copy()
    with tempfile.TemporaryDirectory() as tmp:
        latencies = []
        for number in frame["trial"]:
            model = download(result, int(number), Path(tmp) / f"{number}.onnx")
            latencies.append(predict_file(table, model.read_bytes(), experiment).latency_ms)
    frame["latency_ms"] = latencies
    frame["feasible"] = frame["latency_ms"] <= budget_ms
    frame["violation_ms"] = (frame["latency_ms"] - budget_ms).clip(lower=0.0)
    frame["latency_spread_pct"] = np.nan
    meta = replace(
        result.meta,
        budget_ms=budget_ms,
        reference_latency_ms=teacher,
        target=profile.target.to_dict(),
        device=table.header["device"],
        recosted_for=profile.target.name,
    )
    return replace(result, meta=meta, trials=frame)
