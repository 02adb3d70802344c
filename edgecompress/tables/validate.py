"""Proving a table: random plans of the space, built and measured end to end, against the
table's prediction; with the noise of the measurement itself: each model is measured again in
another process, after all the others, as a table's build and a later search measure it (two
measurements in one process agree more closely than that: on this machine 1.1% against 1.5%)."""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
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

COLUMNS = ("plan", "predicted_ms", "uncertainty_ms", "interpolated", "measured_ms")
# a verdict at +-10% needs the measurement itself well inside it: two measurements of one model
# no more than this far apart (median), and within +-10% of each other for this share of plans
NOISE_LIMIT_PCT = 4.0
AGREE_LIMIT = 0.9


@dataclass(frozen=True)
class Validation:
    # per sample: plan key, predicted_ms, measured_ms, repeat_ms (the same model measured again
    # in another process, for the measurement's own noise), error_pct
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
        within, agree = float((error <= 0.10).mean()), float((noise <= 0.10).mean())
        noisy = 100 * noise.median() > NOISE_LIMIT_PCT or agree < AGREE_LIMIT
        return {
            # None where the measurement is too noisy to judge the table at +-10%: a table's
            # error cannot be told apart from the machine's (the reason is then in "refused")
            "verdict": None
            if noisy
            else f"{100 * within:.0f}% of the plans predicted within +-10% of measured",
            "refused": (
                f"no verdict: two measurements of one model differ by "
                f"{100 * noise.median():.1f}% (median; within +-10% for {100 * agree:.0f}%), "
                f"over the {NOISE_LIMIT_PCT:g}% / {100 * AGREE_LIMIT:.0f}% this check needs to "
                "tell the table's error from the machine's. Run it again on a quiet machine "
                "(nothing else running), or with more --samples."
            )
            if noisy
            else None,
            "samples": int(len(rows)),
            "within_10pct": within,
            "mape": float(100 * error.mean()),
            "spearman": float(rows["predicted_ms"].corr(rows["measured_ms"], method="spearman")),
            "noise_pct": float(100 * noise.median()),
            # how often the two measurements of one model agree within 10% of the first (two
            # noisy measurements: a stricter test than a prediction against one of them)
            "repeat_within_10pct": agree,
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
    entries were measured in, so the machine's drift since the build cancels.

    The repeat runs in a *spawned* process: a script that calls this must keep its top level
    under ``if __name__ == "__main__":`` (as multiprocessing requires)."""
    threads = int(table.header["threads"])
    runner = Runner(reference, threads=threads)
    unit = float(table.header["reference_ms"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    rows: list[dict[str, Any]] = []
    files: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        attempts = 0
        while len(rows) < samples and attempts < 3 * samples:
            attempts += 1
            if progress:
                progress(len(rows), 2 * samples)
            trial = study.ask()
            plan = space.sample(trial)
            study.tell(trial, 0.0)
            try:
                model = build_for_latency(experiment, plan, Path(tmp) / str(attempts))
            except InvalidPlan:
                continue
            predicted = predict_file(table, model, experiment)
            rows.append(
                {
                    "plan": plan.key,
                    "predicted_ms": predicted.latency_ms,
                    "uncertainty_ms": predicted.uncertainty_ms,
                    "interpolated": predicted.interpolated,
                    "measured_ms": runner.ratio(model)[0] * unit,
                }
            )
            files.append(str(Path(tmp) / f"{attempts}.onnx"))
            Path(files[-1]).write_bytes(model)
        del runner  # its sessions' memory, before the other process starts
        if rows:
            _repeat(rows, files, reference, threads, unit, progress)
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "repeat_ms"])
    frame["error_pct"] = 100 * (frame["predicted_ms"] / frame["measured_ms"] - 1)
    return Validation(frame)


def _repeat(
    rows: list[dict[str, Any]],
    files: list[str],
    reference: bytes,
    threads: int,
    unit: float,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Each model measured again in a fresh process (``repeat_ms``), in the same order."""
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter, not a copy of this one
    args = (reference, threads, os.getpid())
    try:
        with ProcessPoolExecutor(1, spawn, initializer=_open, initargs=args) as pool:
            for i, (row, ratio) in enumerate(zip(rows, pool.map(_ratio, files), strict=True)):
                if progress:
                    progress(len(rows) + i, 2 * len(rows))
                row["repeat_ms"] = ratio * unit
    except BrokenProcessPool as exc:
        raise EdgeCompressError(
            f"the repeat measurement's process died ({exc}); if memory ran out, validate "
            "fewer --samples at a time"
        ) from None


_RUNNER: list[Runner] = []  # the other process's runner, opened once by _open


def _open(reference: bytes, threads: int, parent: int) -> None:
    _RUNNER.append(Runner(reference, threads=threads))

    def orphaned() -> None:  # the parent killed: nobody will ask for more, so leave
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()


def _ratio(model: str) -> float:
    return _RUNNER[0].ratio(model)[0]
