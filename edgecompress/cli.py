"""The command line: a thin shell, each subcommand one library call.

Exit codes: 0 done; 2 bad input (nothing was run or changed); 3 no trial meets the budget;
4 the search stopped because trials kept failing (finished trials are kept).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import pandas as pd

from edgecompress.errors import EdgeCompressError, NoFeasibleTrial, TrialsKeepFailing
from edgecompress.experiment import Experiment, load_experiment
from edgecompress.export import export
from edgecompress.search import DEFAULT_STORAGE, Result, open_result, search, space_report
from edgecompress.search.storage import open_storage, study_names

EXIT_BAD_INPUT, EXIT_INFEASIBLE, EXIT_TRIALS_FAILING = 2, 3, 4


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgecompress",
        description="Search compressed models under a latency budget; export them as ONNX.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("search", help="run or resume a compression search")
    s.add_argument("experiment", help="FILE.py:NAME naming an edgecompress.Experiment")
    budget = s.add_mutually_exclusive_group()
    budget.add_argument("--budget-ms", type=float, help="latency budget in ms on the target")
    budget.add_argument(
        "--speedup", type=float, help="budget = the uncompressed model's measured latency / SPEEDUP"
    )
    s.add_argument(
        "--trials",
        type=int,
        required=True,
        help="total completed trials wanted in the study (baselines and uniform seeds included)",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=1,
        help="parallel trials; >1 runs them on Ray (default 1: in this process)",
    )
    s.add_argument("--ray-address", help="join this Ray cluster instead of starting one")
    _study_args(s)
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    _format_arg(s)

    f = sub.add_parser("front", help="show the Pareto front of a study, budget marked")
    _study_args(f)
    _format_arg(f)

    e = sub.add_parser("export", help="write a trial as a deployable .onnx and .json manifest")
    _study_args(e)
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--best", action="store_true", help="the most accurate trial within the budget"
    )
    which.add_argument("--trial", type=int, help="this trial number")
    e.add_argument("-o", "--output", required=True, help="path of the .onnx file to write")
    e.add_argument("--experiment", help="FILE.py:NAME (default: the one the study searched)")

    sp = sub.add_parser("space", help="show what a search would vary, and what it leaves alone")
    sp.add_argument("experiment", help="FILE.py:NAME naming an edgecompress.Experiment")
    sp.add_argument("--format", choices=("table", "json"), default="table", help="(default table)")
    return p


def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--study",
        help="study name (default: the experiment's name, or the only study in the storage)",
    )
    p.add_argument("--storage", help=f"Optuna storage URL (default {DEFAULT_STORAGE})")


def _format_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="how to print the front (default table)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        commands = {"search": _search, "front": _front, "export": _export, "space": _space}
        return commands[args.command](args)
    except NoFeasibleTrial as exc:
        print(f"edgecompress: {exc}", file=sys.stderr)
        return EXIT_INFEASIBLE
    except EdgeCompressError as exc:
        print(f"edgecompress: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrialsKeepFailing as exc:
        print(f"edgecompress: {exc}", file=sys.stderr)
        return EXIT_TRIALS_FAILING
    except KeyboardInterrupt:
        print(
            "edgecompress: interrupted; finished trials are kept, run again to resume.",
            file=sys.stderr,
        )
        return 130


def _search(args: argparse.Namespace) -> int:
    experiment = load_experiment(args.experiment)
    result = search(
        experiment,
        trials=args.trials,
        budget_ms=args.budget_ms,
        speedup=args.speedup,
        workers=args.workers,
        storage=args.storage,
        study=args.study,
        ray_address=args.ray_address,
        progress=not args.no_progress,
    )
    return _print_front(result, args.format)


def _study_name(args: argparse.Namespace) -> str:
    if args.study:
        return str(args.study)
    names = study_names(open_storage(args.storage, must_exist=True))
    if len(names) == 1:
        return names[0]
    raise EdgeCompressError(
        f"pass --study: the storage {args.storage or DEFAULT_STORAGE!r} holds "
        f"{len(names)} studies ({', '.join(names) or 'none'})."
    )


def _front(args: argparse.Namespace) -> int:
    return _print_front(open_result(_study_name(args), args.storage), args.format)


def _export(args: argparse.Namespace) -> int:
    result = open_result(_study_name(args), args.storage)
    experiment = _experiment_of(result, args.experiment)
    manifest = export(experiment, result, args.output, trial=args.trial)
    m = manifest["metrics"]
    test = "no test split" if m["test_accuracy"] is None else f"test {m['test_accuracy']:.4f}"
    print(
        f"wrote {args.output} and its manifest: trial {manifest['trial']}, accuracy "
        f"{m['accuracy']:.4f} ({test}; verified), latency "
        f"{m['latency_ms']:.4f} ms (re-measured now: {m['latency_ms_remeasured']:.4f} ms), "
        f"budget {manifest['budget_ms']:.4f} ms"
    )
    return 0


def _space(args: argparse.Namespace) -> int:
    knobs, skipped = space_report(load_experiment(args.experiment))
    if args.format == "json":
        print(json.dumps(knobs + skipped, indent=2, allow_nan=False))
        return 0
    rows = [
        {"knob": k["name"], "kind": k["kind"], "values": _values(k), "layers": _layers(k)}
        for k in knobs
    ]
    print(f"{len(knobs)} knobs:")
    print(pd.DataFrame(rows).to_string(index=False) if rows else "(none)")
    if skipped:
        alone = pd.DataFrame(
            [
                {"layer": s["name"], "technique": s["technique"], "reason": s["reason"]}
                for s in skipped
            ]
        )
        print(f"\nleft alone ({len(skipped)}):")
        print(alone.to_string(index=False))
    return 0


def _values(knob: dict[str, Any]) -> str:
    if knob["kind"] == "fixed":
        return f"= {knob['value']}"
    if "choices" in knob:
        return " | ".join(str(c) for c in knob["choices"])
    scale = ", log" if knob.get("log") else f" step {knob['step']}"
    return f"{knob['low']} .. {knob['high']}{scale}"


def _layers(knob: dict[str, Any]) -> str:
    layers = knob["layers"]
    return (
        ", ".join(layers) if len(layers) <= 4 else f"{', '.join(layers[:3])}, ... ({len(layers)})"
    )


def _experiment_of(result: Result, ref: str | None) -> Experiment:
    ref = ref or result.meta.get("experiment_ref")
    if not ref:
        raise EdgeCompressError(
            f"study {result.study_name!r} does not record its experiment file; pass "
            "--experiment FILE.py:NAME."
        )
    return load_experiment(ref)


def _plan_summary(plan: dict[str, Any], notes: dict[str, Any]) -> str:
    def values(section: str) -> list[float]:
        return [float(v) for k, v in plan.items() if k.startswith(section + ".")]

    parts = []
    if notes.get("student") == "family":
        parts.append(f"student w{plan.get('student.width')} d{plan.get('student.depth')}")
    elif notes.get("student") == "derived":
        depth = [str(v) for k, v in plan.items() if k.startswith("student.depth.")]
        width = [f"{float(v):g}" for k, v in plan.items() if k.startswith("student.width.")]
        parts.append(f"student depth {'/'.join(depth) or '-'} width {'/'.join(width) or '-'}")
    ratios = values("prune")
    if any(ratios):
        parts.append(f"prune mean {sum(ratios) / len(ratios):.2f}")
    sparse = sum(v > 0 for v in values("sparsity"))
    if sparse:
        parts.append(f"sparse {sparse} ({plan.get('method.sparsity', 'magnitude')})")
    factorized = sum(v < 1 for v in values("rank"))
    if factorized:
        parts.append(f"low-rank {factorized}")
    parts += _precision_summary(plan, [int(b) for b in values("bits")])
    return ", ".join(parts) or "uncompressed"


def _precision_summary(plan: dict[str, Any], bits: list[int]) -> list[str]:
    names = {4: "int4", 8: "int8", 16: "fp16"}
    counts = {b: bits.count(b) for b in sorted(set(bits)) if b != 32}
    if not counts:
        return []
    method = plan.get("method.quant", "static")
    shown = " ".join(f"{names.get(b, f'{b}-bit')} {n}" for b, n in counts.items())
    return [f"{shown} of {len(bits)}" + (f" ({method})" if 8 in counts else "")]


def _print_front(result: Result, fmt: str) -> int:
    frame = result.front()
    records = result.records(frame)
    if fmt == "json":
        print(json.dumps(records, indent=2, allow_nan=False))
    elif fmt == "csv":
        flat = pd.DataFrame(records)
        if len(flat):
            for column in ("plan", "notes"):
                flat[column] = flat[column].map(lambda p: json.dumps(p, sort_keys=True))
        print(flat.to_csv(index=False), end="")
    else:
        print(_table(result, records))
    if not result.has_feasible:
        print(
            f"edgecompress: no trial meets the budget of {result.budget_ms:.4f} ms; shown are "
            "the closest trials.",
            file=sys.stderr,
        )
        return EXIT_INFEASIBLE
    return 0


def _table(result: Result, records: list[dict[str, Any]]) -> str:
    m = result.meta
    head = (
        f"study {result.study_name}: {len(result.trials)} complete, {result.failed} failed | "
        f"budget {m['budget_ms']:.4f} ms | uncompressed {m['reference_latency_ms']:.4f} ms | "
        f"target {m['target']['name']} ({m['target']['threads']} thread, "
        f"batch {m['target']['batch_size']}) on {m['device']['cpu_model']}"
    )
    title = (
        "Pareto front within the budget"
        if result.has_feasible
        else "NO trial meets the budget; the closest trials"
    )
    rows = [
        {
            "trial": r["trial"],
            "accuracy": f"{r['accuracy']:.4f}",
            "test_acc": "-" if r["test_accuracy"] is None else f"{r['test_accuracy']:.4f}",
            "latency_ms": f"{r['latency_ms']:.4f}",
            "speedup": f"{r['speedup']:.1f}x",
            "size_mb": f"{r['size_mb']:.3f}",
            "gz_mb": "-" if r["size_gz_mb"] is None else f"{r['size_gz_mb']:.3f}",
            "budget": "meets" if r["feasible"] else f"over +{r['violation_ms']:.4f}",
            "plan": r["baseline"] or _plan_summary(r["plan"], r.get("notes") or {}),
        }
        for r in records
    ]
    body = pd.DataFrame(rows).to_string(index=False) if rows else "(no completed trials)"
    return f"{head}\n{title}:\n{body}"


if __name__ == "__main__":
    sys.exit(main())
