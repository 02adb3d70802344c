"""Benchmark: this machine's latency table for the built-in example, proven, and searched with.

    .venv/bin/python bench/latency_table.py [--samples 50] [--trials 24] [--speedup 10]

1. ``table build`` for examples/mnist1d.py (bench/_work/targets/local-cpu): time, micro-models,
   the calibration fitted on the whole models.
2. ``table validate``: random plans built and measured end to end against the table's
   prediction; the same plans also priced by simpler predictors: ``naive`` (each kernel's
   micro-model timed alone, call overhead and all, added up with the same interpolation),
   ``sum`` (the entries plus the call overhead) and ``scale`` (the same, times one scale fitted
   on the whole models).
3. (``--trials N``) the same search twice from scratch, without and with screening, latency
   measured live both times: wall time, trials trained and screened, the best feasible accuracy
   and when each run first reached the other's final front quality.
4. (``--retime-whole``) the build's whole models timed again now, in this process, against the
   times the build recorded: how far one model's time moves from one session to another, which
   no prediction can know.

Writes bench/latency_table.json (after each phase). Timings are this machine's, noisy and shared.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from edgecompress import load_experiment, search
from edgecompress.search.engine import checked_reference, space_of
from edgecompress.tables.build import build_table
from edgecompress.tables.validate import validate
from edgecompress.targets import describe_device
from edgecompress.targets.table import LatencyTable

HERE = Path(__file__).parent
WORK = HERE / "_work"
EXAMPLE = str(HERE.parent / "examples" / "mnist1d.py") + ":experiment"


def build(levels: int, random: int, whole: int) -> dict[str, Any]:
    experiment = load_experiment(EXAMPLE)
    space = space_of(experiment, checked_reference(experiment))
    built = build_table(
        experiment,
        space,
        "local-cpu",
        root=WORK / "targets",
        levels=levels,
        random=random,
        whole=whole,
    )
    header = built.profile.require_table().header
    return {
        "micro_models": built.micro_models,
        "entries": built.coverage.rows,
        "missing": len(built.coverage.missing),
        "noisy": built.coverage.noisy,
        "build_s": built.seconds,
        "calibration": header.get("calibration"),
    }


def naive(table: LatencyTable, device_csv: Path) -> LatencyTable:
    """Each kernel's micro-model time alone (overhead included), no per-call overhead added."""
    alone = pd.read_csv(device_csv, keep_default_na=False)
    alone = alone[alone["status"].isin(["ok", "noisy"])].reset_index(drop=True)
    entries = table.entries.copy()
    entries["latency_ms"] = alone["alone_ms"].astype(float).to_numpy()
    return LatencyTable(entries, {**uncalibrated(table), "overhead_ms": 0.0, "scale": 1.0})


def uncalibrated(table: LatencyTable) -> dict[str, Any]:
    """The table's header without its calibration: its prediction is the sum times ``scale``."""
    return {k: v for k, v in table.header.items() if k != "calibration"}


def prove(samples: int) -> dict[str, Any]:
    from edgecompress.targets.profile import load_profile

    experiment = load_experiment(EXAMPLE)
    space = space_of(experiment, checked_reference(experiment))
    profile = load_profile("local-cpu", WORK / "targets")
    table = profile.require_table()
    reference = profile.reference.read_bytes()
    start = time.perf_counter()
    result = validate(experiment, space, table, reference, samples=samples)
    summary = result.summary() | {"validate_s": time.perf_counter() - start}
    rows = result.rows
    # the same plans priced by simpler predictors, to show what each part of the table's adds
    plain = uncalibrated(table)
    variants = {
        "naive": naive(table, profile.folder / "build" / "device.csv"),
        "sum": LatencyTable(table.entries, {**plain, "scale": 1.0}),
        "scale": LatencyTable(table.entries, plain),  # the global scale alone
    }
    predicted: dict[str, list[float]] = {name: [] for name in variants}
    from edgecompress.tables.predict import build_for_latency, predict_file

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    with __import__("tempfile").TemporaryDirectory() as tmp:
        done = 0
        while done < len(rows):
            trial = study.ask()
            plan = space.sample(trial)
            study.tell(trial, 0.0)
            if plan.key != rows["plan"].iloc[done]:
                continue
            model = build_for_latency(experiment, plan, Path(tmp) / str(done))
            for name, variant in variants.items():
                predicted[name].append(predict_file(variant, model, experiment).latency_ms)
            done += 1
    for name, values in predicted.items():
        error = (pd.Series(values) / rows["measured_ms"] - 1).abs()
        summary[f"{name}_within_10pct"] = float((error <= 0.10).mean())
        summary[f"{name}_mape"] = float(100 * error.mean())
        summary[f"{name}_spearman"] = float(
            pd.Series(values).corr(rows["measured_ms"], method="spearman")
        )
    return (
        summary
        | timings(experiment, space, profile)
        | {"rows": rows.round(5).to_dict(orient="records")}
    )


def retime_whole() -> dict[str, Any]:
    from edgecompress.targets.profile import load_profile
    from edgecompress.targets.runner import Runner

    profile = load_profile("local-cpu", WORK / "targets")
    table = profile.require_table()
    runs = pd.read_csv(profile.folder / "build" / "device-whole.csv", keep_default_na=False)
    runs = runs[runs["status"] == "ok"]
    bundle = profile.folder / "build" / "bundle"
    files = pd.read_csv(bundle / "whole.csv", keep_default_na=False).set_index("id")["file"]
    runner = Runner(profile.reference.read_bytes(), threads=int(table.header["threads"]))
    unit = float(table.header["reference_ms"])
    now = [runner.ratio(str(bundle / files[i]))[0] * unit for i in runs["id"]]
    moved = (pd.Series(now, index=runs.index) / runs["latency_ms"].astype(float) - 1).abs()
    return {
        "models": int(len(runs)),
        "within_10pct": float((moved <= 0.10).mean()),
        "within_5pct": float((moved <= 0.05).mean()),
        "median_pct": float(100 * moved.median()),
        "mean_pct": float(100 * moved.mean()),
        "built": table.header.get("date"),
        "retimed": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
    }


def timings(experiment: Any, space: Any, profile: Any) -> dict[str, float]:
    """What predicting one candidate costs: building its graph without training, finding its
    kernels, and the table lookup itself (a fresh table, then again with its cache warm)."""
    import tempfile

    from edgecompress.tables.predict import build_for_latency
    from edgecompress.targets.kernels import kernels
    from edgecompress.targets.table import load_table

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
    build_s, kernel_s, cold, warm = [], [], [], []
    feed = {"input": experiment.example_input.numpy()[:1]}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(10):
            trial = study.ask()
            plan = space.sample(trial)
            study.tell(trial, 0.0)
            t = time.perf_counter()
            model = build_for_latency(experiment, plan, Path(tmp) / str(i))
            build_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            layers = [k.layer for k in kernels(model, feed)]
            kernel_s.append(time.perf_counter() - t)
            fresh = load_table(profile.folder / "table")
            fresh.predict(layers[:1])  # its index built once per table, not per candidate
            t = time.perf_counter()
            fresh.predict(layers)
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            fresh.predict(layers)
            warm.append(time.perf_counter() - t)
    median = lambda xs: float(pd.Series(xs).median())  # noqa: E731
    return {
        "build_for_latency_ms": 1e3 * median(build_s),
        "kernels_ms": 1e3 * median(kernel_s),
        "predict_ms_cold": 1e3 * median(cold),
        "predict_ms_warm": 1e3 * median(warm),
    }


def searches(trials: int, speedup: float, workers: int) -> list[dict[str, Any]]:
    out = []
    storage = f"sqlite:///{WORK / 'latency_table.db'}"
    for screen in (False, True):
        experiment = load_experiment(EXAMPLE)
        study = f"screen-{screen}-{int(time.time())}"
        start = time.perf_counter()
        result = search(
            experiment,
            trials=trials,
            speedup=speedup,
            workers=workers,
            storage=storage,
            study=study,
            screen=screen,
            targets=str(WORK / "targets"),
        )
        wall = time.perf_counter() - start
        done = optuna.load_study(study_name=study, storage=storage).trials
        first = min(t.datetime_start for t in done if t.datetime_start)
        feasible = result.trials[result.trials["feasible"]]
        timeline = [
            {
                "at_s": (t.datetime_complete - first).total_seconds(),
                "accuracy": t.user_attrs["accuracy"],
                "feasible": t.user_attrs["latency_ms"] <= result.budget_ms,
            }
            for t in done
            if t.state == optuna.trial.TrialState.COMPLETE and t.datetime_complete
        ]
        out.append(
            {
                "screen": screen,
                "study": study,
                "wall_s": wall,
                "trained": len(result.trials),
                "feasible": len(feasible),
                "screened": int(result.screening.get("screened", 0)),
                "saved_s": result.screening.get("saved_s", 0.0),
                "best_accuracy": float(feasible["accuracy"].max()) if len(feasible) else None,
                "front": len(result.front()),
                "residuals": (result.meta.residuals or {}).get("median_residual"),
                "timeline": timeline,
            }
        )
    for run, other in ((out[0], out[1]), (out[1], out[0])):
        target = other["best_accuracy"]
        reached = [
            p["at_s"]
            for p in run["timeline"]
            if p["feasible"] and target is not None and p["accuracy"] >= target
        ]
        run["reached_other_best_at_s"] = min(reached) if reached else None
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--levels", type=int, default=9)
    p.add_argument("--random", type=int, default=40)
    p.add_argument("--whole", type=int, default=150)
    p.add_argument("--samples", type=int, default=50)
    p.add_argument("--trials", type=int, default=0, help="0: no search comparison")
    p.add_argument("--speedup", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--skip-build", action="store_true", help="keep bench/_work/targets' table")
    p.add_argument("--retime-whole", action="store_true", help="re-time the whole models")
    args = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"device": describe_device()}
    out = HERE / "latency_table.json"
    if out.exists():
        report = json.loads(out.read_text()) | report

    def save() -> None:  # after each phase: a later one failing loses nothing
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")

    if not args.skip_build:
        report["build"] = build(args.levels, args.random, args.whole)
        save()
    if args.samples:
        report["validate"] = prove(args.samples)
        save()
    if args.trials:
        report["search"] = searches(args.trials, args.speedup, args.workers)
        save()
    if args.retime_whole:
        # every re-timing is kept: how far the times move depends on when they are taken
        runs = report.get("retime_whole_runs") or [report.get("retime_whole")]
        report["retime_whole"] = retime_whole()
        report["retime_whole_runs"] = [r for r in runs if r] + [report["retime_whole"]]
        save()
        print(json.dumps(report["retime_whole"], indent=2))
    shown = {k: v for k, v in report.get("validate", {}).items() if k != "rows"}
    print(json.dumps(shown, indent=2))


if __name__ == "__main__":
    main()
