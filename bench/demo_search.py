"""Benchmark: the demo search on the built-in MNIST-1D example, at two latency budgets.

    .venv/bin/python bench/demo_search.py [--trials 24] [--workers 2] [--speedups 10 25]

For each budget (teacher latency / S) it runs a fresh study, exports the best feasible trial
(which re-measures its latency) and writes bench/results.md and bench/results.json. Timings are
from this machine, noisy and shared: latency is a ratio to the teacher timed in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edgecompress import EdgeCompressError, export, load_experiment, search
from edgecompress.targets import describe_device

HERE = Path(__file__).parent
WORK = HERE / "_work"


def run(speedup: float, trials: int, workers: int) -> dict:
    experiment = load_experiment(str(HERE.parent / "examples" / "mnist1d.py") + ":experiment")
    storage = f"sqlite:///{WORK / 'bench.db'}"
    study = f"mnist1d-x{speedup:g}-{int(time.time())}"
    start = time.perf_counter()
    result = search(
        experiment,
        trials=trials,
        speedup=speedup,
        workers=workers,
        storage=storage,
        study=study,
        progress=True,
    )
    wall = time.perf_counter() - start
    trials_df = result.trials.set_index("baseline")
    teacher = trials_df.loc["teacher"]
    row = {
        "speedup_budget": speedup,
        "budget_ms": result.budget_ms,
        "teacher_accuracy": teacher["accuracy"],
        "teacher_test_accuracy": teacher["test_accuracy"],
        "teacher_latency_ms": result.meta.reference_latency_ms,
        "trials_complete": len(result.trials),
        "trials_failed": result.failed,
        "wall_s": wall,
        "study": study,
    }
    best = result.best()
    if best is not None:
        manifest = export(experiment, result, WORK / f"{study}.onnx")
        row.update(
            best_trial=int(best["trial"]),
            best_accuracy=best["accuracy"],
            best_test_accuracy=best["test_accuracy"],
            best_latency_ms=best["latency_ms"],
            best_speedup=result.meta.reference_latency_ms / best["latency_ms"],
            best_latency_remeasured_ms=manifest["metrics"]["latency_ms_remeasured"],
            best_plan=best["plan"],
        )
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| budget | teacher acc (val / test) | teacher latency | best feasible acc (val / test) "
        "| its latency (re-measured) | speedup | trials (failed) | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        best = (
            f"{r['best_accuracy']:.3f} / {r['best_test_accuracy']:.3f} | "
            f"{r['best_latency_ms']:.4f} ms ({r['best_latency_remeasured_ms']:.4f}) | "
            f"{r['best_speedup']:.1f}x"
            if "best_trial" in r
            else "none feasible | - | -"
        )
        lines.append(
            f"| teacher / {r['speedup_budget']:g} = {r['budget_ms']:.4f} ms | "
            f"{r['teacher_accuracy']:.3f} / {r['teacher_test_accuracy']:.3f} | "
            f"{r['teacher_latency_ms']:.4f} ms | {best} | {r['trials_complete']} "
            f"({r['trials_failed']}) | {r['wall_s'] / 60:.1f} min |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--speedups", type=float, nargs="+", default=[10.0, 25.0])
    args = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in args.speedups:
        try:
            rows.append(run(s, args.trials, args.workers))
        except EdgeCompressError as exc:
            print(f"speedup {s}: {exc}")
    device = describe_device()
    text = (
        f"# Demo search benchmark\n\nCommand: `.venv/bin/python bench/demo_search.py --trials "
        f"{args.trials} --workers {args.workers} --speedups "
        f"{' '.join(f'{s:g}' for s in args.speedups)}`\n\nMachine: {device['cpu_model']}, "
        f"{device['logical_cpus']} logical CPUs, ISA {' '.join(device['isa_flags'])}, "
        f"onnxruntime {device['onnxruntime']}; target: 1 thread, batch 1.\n\n{table(rows)}\n"
    )
    (HERE / "results.md").write_text(text)
    (HERE / "results.json").write_text(json.dumps(rows, indent=2, default=float) + "\n")
    print(text)


if __name__ == "__main__":
    main()
