"""The command line: a thin shell, each subcommand one library call.

Exit codes: 0 done; 2 bad input (nothing was run or changed); 3 no trial meets the budget;
4 the search stopped because trials kept failing (finished trials are kept).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from edgecompress import cli_table
from edgecompress.cli_format import EXIT_INFEASIBLE, print_front
from edgecompress.errors import EdgeCompressError, NoFeasibleTrial, TrialsKeepFailing
from edgecompress.experiment import Experiment, load_experiment
from edgecompress.export import FORMATS as EXPORT_FORMATS
from edgecompress.export import export
from edgecompress.search import (
    DEFAULT_STORAGE,
    STRATEGIES,
    Result,
    open_result,
    profile_report,
    search,
    space_and_dominated,
)
from edgecompress.search.recost import recost
from edgecompress.search.storage import open_storage, redacted, study_names
from edgecompress.targets.profile import load_profile
from edgecompress.targets.target import RUNTIMES
from edgecompress.tasks import ClassificationTask, RegressionTask
from edgecompress.tasks.metrics import shown

EXIT_BAD_INPUT, EXIT_TRIALS_FAILING = 2, 4
EXPERIMENT_HELP = "FILE.py:NAME or package.module:NAME naming an edgecompress.Experiment"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgecompress",
        description="Search compressed models under a latency budget; export them as ONNX.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("search", help="run or resume a compression search")
    s.add_argument("experiment", help=EXPERIMENT_HELP)
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
    s.add_argument(
        "--target",
        help="device profile: a folder under --targets (default: the experiment's, local-cpu)",
    )
    s.add_argument(
        "--latency",
        choices=("live", "table"),
        help="measured here (default on this machine) or from the target's table (default for "
        "another device)",
    )
    screen = s.add_mutually_exclusive_group()
    screen.add_argument(
        "--screen",
        dest="screen",
        action="store_true",
        default=None,
        help="skip plans the table predicts clearly over budget (default when it has a table)",
    )
    screen.add_argument("--no-screen", dest="screen", action="store_false")
    s.add_argument("--targets", help="folder of target profiles (default ./targets)")
    s.add_argument(
        "--runtime",
        choices=sorted(RUNTIMES),
        help="what runs the deployed model, for its latency and metrics (default: the "
        "experiment's target's, onnxruntime; openvino needs edgecompress[openvino]); another "
        "runtime is another study (--study NAME)",
    )
    s.add_argument(
        "--strategy",
        choices=sorted(STRATEGIES),
        default="allocate",
        help="what proposes the plans: allocate (sensitivity-guided allocation under the "
        "budget, then refinement; the default), tpe (multi-objective TPE over every knob), "
        "random",
    )
    s.add_argument(
        "--metric",
        help="the task's metric the study optimises (default: the task's own; classification: "
        "accuracy; regression: rmse, mae, mse or r2); every metric is recorded",
    )
    s.add_argument(
        "--max-drop",
        type=float,
        help="ask for the fastest model within this drop of the teacher's validation metric, "
        "in its units (0.01: one accuracy point; for an error, how much larger it may be) "
        "instead of the best within the budget",
    )
    s.add_argument(
        "--timeout",
        type=_seconds,
        help="wall-clock limit of this run, e.g. 90s, 30m, 2h or 1h30m: no trial starts after "
        "it (those running finish), everything is kept; run again to resume",
    )
    s.add_argument(
        "--artifacts",
        metavar="URL",
        help="where the trials' ONNX files go: a folder every machine of the study shares, or "
        "s3://bucket/prefix (boto3's credentials and AWS_ENDPOINT_URL); recorded in the study "
        "(default: beside an SQLite file, else ./edgecompress-artifacts)",
    )
    _study_args(s)
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    _format_arg(s)

    f = sub.add_parser("front", help="show the Pareto front of a study, budget marked")
    f.add_argument("--target", help="re-cost the study for this target's table (metrics unchanged)")
    f.add_argument("--targets", help="folder of target profiles (default ./targets)")
    f.add_argument(
        "--budget-ms",
        type=float,
        help="with --target: the budget on that device (default: the "
        "study's speedup applied there, or its budget in ms)",
    )
    f.add_argument("--experiment", help="FILE.py:NAME (default: the one the study searched)")
    _study_args(f)
    _format_arg(f)

    e = sub.add_parser("export", help="write a trial as a deployable .onnx and .json manifest")
    _study_args(e)
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--best",
        action="store_true",
        help="the answer to the study's question: the best trial (by the study's metric) within "
        "the budget, or the fastest within --max-drop of the teacher",
    )
    which.add_argument("--trial", type=int, help="this trial number")
    e.add_argument("-o", "--output", required=True, help="path of the .onnx file to write")
    e.add_argument(
        "--format",
        type=_formats,
        default=("onnx",),
        help="onnx (default) or onnx,ort: also the ONNX Runtime Mobile .ort beside it, "
        "verified and re-measured",
    )
    e.add_argument("--experiment", help="FILE.py:NAME (default: the one the study searched)")

    pl = sub.add_parser(
        "plot", help="draw a study: its metric against latency, the front, the budget (png/html)"
    )
    _study_args(pl)
    pl.add_argument(
        "-o",
        "--output",
        default="front.png",
        help="the picture to write: .png, .svg, .pdf, or .html (interactive) (default front.png)",
    )
    pl.add_argument(
        "--trial", type=int, help="the trial to highlight (default: what export --best picks)"
    )

    sp = sub.add_parser("space", help="show what a search would vary, and what it leaves alone")
    sp.add_argument("experiment", help=EXPERIMENT_HELP)
    sp.add_argument("--format", choices=("table", "json"), default="table", help="(default table)")
    sp.add_argument(
        "--runtime", choices=sorted(RUNTIMES), help="what the cached profile was measured on"
    )
    pr = sub.add_parser(
        "profile", help="measure (or show the cached) sensitivity of each layer and its cost"
    )
    pr.add_argument("experiment", help=EXPERIMENT_HELP)
    pr.add_argument("--format", choices=("table", "csv", "json"), default="table")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    pr.add_argument(
        "--runtime", choices=sorted(RUNTIMES), help="profile on this runtime (as search)"
    )
    cli_table.add_parser(sub)
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
        commands = {
            "search": _search,
            "front": _front,
            "export": _export,
            "plot": _plot,
            "space": _space,
            "profile": _profile,
            "table": cli_table.run,
        }
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


def _experiment(args: argparse.Namespace) -> Experiment:
    """The experiment named on the command line, on ``--runtime`` where one was given."""
    experiment = load_experiment(args.experiment)
    return experiment if args.runtime is None else experiment.with_runtime(args.runtime)


def _search(args: argparse.Namespace) -> int:
    experiment = _experiment(args)
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
        target=args.target,
        latency=args.latency,
        screen=args.screen,
        targets=args.targets,
        strategy=args.strategy,
        max_drop=args.max_drop,
        metric=args.metric,
        timeout_s=args.timeout,
        artifacts=args.artifacts,
    )
    code = print_front(result, args.format)
    if result.stopped:
        print(f"edgecompress: stopped: {result.stopped}.", file=sys.stderr)
    return code


def _formats(text: str) -> tuple[str, ...]:
    """``export --format``: a comma-separated list of onnx and ort."""
    chosen = tuple(dict.fromkeys(p.strip() for p in text.lower().split(",") if p.strip()))
    if not chosen or set(chosen) - set(EXPORT_FORMATS):
        raise argparse.ArgumentTypeError(
            f"{text!r}: write the formats as onnx or onnx,ort (the .onnx is always written)"
        )
    return chosen


UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(text: str) -> float:
    """``--timeout``'s duration in seconds: 90, 90s, 30m, 2h, 1h30m, 1.5h."""
    parts = re.fullmatch(r"\s*((?:\d+(?:\.\d*)?|\.\d+)[smhd]?)+\s*", text.lower())
    pieces = re.findall(r"(\d+(?:\.\d*)?|\.\d+)([smhd]?)", text.lower())
    seconds = sum(float(n) * UNITS[u or "s"] for n, u in pieces)
    if parts is None or not pieces or not seconds > 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a positive duration: write it as 90s, 30m, 2h or 1h30m"
        )
    return seconds


def _study_name(args: argparse.Namespace) -> str:
    if args.study:
        return str(args.study)
    names = study_names(open_storage(args.storage, must_exist=True))
    if len(names) == 1:
        return names[0]
    raise EdgeCompressError(
        f"pass --study: the storage {redacted(args.storage or DEFAULT_STORAGE)!r} holds "
        f"{len(names)} studies ({', '.join(names) or 'none'})."
    )


def _front(args: argparse.Namespace) -> int:
    result = open_result(_study_name(args), args.storage)
    if args.target:
        experiment = _experiment_of(result, args.experiment)
        profile = load_profile(args.target, args.targets)
        result = recost(result, experiment, profile, budget_ms=args.budget_ms)
    elif args.budget_ms is not None:
        raise EdgeCompressError("--budget-ms with front re-costs for a target: add --target NAME")
    return print_front(result, args.format)


def _plot(args: argparse.Namespace) -> int:
    result = open_result(_study_name(args), args.storage)
    written = result.plot(args.output, trial=args.trial)
    best = result.best()
    chosen = args.trial if args.trial is not None else None if best is None else int(best["trial"])
    marked = "no trial meets the budget" if chosen is None else f"trial {chosen} highlighted"
    print(f"wrote {written}: {len(result.trials)} trials, the front, the budget; {marked}")
    return 0


def _export(args: argparse.Namespace) -> int:
    result = open_result(_study_name(args), args.storage)
    experiment = _experiment_of(result, args.experiment)
    manifest = export(experiment, result, args.output, trial=args.trial, formats=args.format)
    m, name = manifest["metrics"], manifest["metric"]
    test = (
        "no test split" if m[f"test_{name}"] is None else f"test {shown(m[f'test_{name}'], name)}"
    )
    again = m["latency_ms_remeasured"]
    now = "from the target's table" if again is None else f"re-measured now: {again:.4f} ms"
    print(
        f"wrote {args.output} and its manifest: trial {manifest['trial']}, {name} "
        f"{shown(m[name], name)} ({test}; verified), latency {m['latency_ms']:.4f} ms, "
        f"{m['speedup']:.1f}x the uncompressed model ({now}), budget "
        f"{manifest['budget_ms']:.4f} ms"
        + (
            ""
            if manifest["feasible"]
            else f": this trial is OVER the budget by {m['latency_ms'] - manifest['budget_ms']:.4f}"
            " ms (exported as asked; the manifest says feasible: false)"
        )
    )
    ort = manifest["formats"].get("ort")
    if ort is not None:
        timed = ort["latency_ms_remeasured"]
        print(
            f"wrote {Path(args.output).with_suffix('.ort')} (ONNX Runtime Mobile, "
            f"{ort['size_mb']:.2f} MB): {name} verified"
            + ("" if timed is None else f", re-measured {timed:.4f} ms")
        )
    return 0


def _space(args: argparse.Namespace) -> int:
    experiment = _experiment(args)
    knobs, skipped, dominated = space_and_dominated(experiment)
    if args.format == "json":  # the knobs and layers left alone, as before
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
        print(
            f"\nleft alone by one technique ({len(skipped)}; a layer left alone by one may be "
            "another's knob above):"
        )
        print(alone.to_string(index=False))
    if dominated is None:
        print(
            "\nno sensitivity profile of this space is cached for this machine: `edgecompress "
            "profile` measures which options pay nothing here (a search does it first)"
        )
    elif dominated:
        print(
            f"\ndominated on this machine, by the cached sensitivity profile ({len(dominated)}; "
            "the allocate strategy never takes them, tpe and random may):"
        )
        print(pd.DataFrame(dominated).to_string(index=False))
    else:
        print("\nthe cached sensitivity profile found no option dominated on this machine")
    return 0


def _profile(args: argparse.Namespace) -> int:
    experiment = _experiment(args)
    frame = profile_report(experiment, progress=not args.no_progress)
    if args.format != "table":
        print(frame.to_json(orient="records") if args.format == "json" else frame.to_csv())
        return 0
    damage, saved = frame["damage"].clip(lower=0), frame["saved_ms"].clip(lower=0)
    shown = frame.assign(
        sensitive=[_bar(d, damage.max()) for d in damage],
        faster=[_bar(s, saved.max()) for s in saved],
    )
    print(
        f"base plan {frame.attrs['base_ms']:.4f} ms (the uncompressed model "
        f"{frame.attrs['reference_ms']:.4f} ms). damage: {_divergence(experiment)} "
        "without fine-tuning; saved: latency saved against the base plan"
    )
    bases = frame.attrs.get("bases", ())
    if len(bases) > 1:
        print(
            "the base was chosen among these precisions and channel alignments (round_to), by "
            "the speedup of their uniform plans at no pruning, half and the most:"
        )
        for b in bases:
            speedups = ", ".join(f"{1 / r:.2f}x" for r in b["ratios"])
            chosen = "  <- chosen" if b["chosen"] else ""
            print(f"  {b['precision']:>12} round_to {b['round_to']!s:>4}: {speedups}{chosen}")
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    dominated = frame.attrs.get("dominated", ())
    if dominated:
        print(f"\ndominated here ({len(dominated)}; an allocation never takes them):")
        print(pd.DataFrame(dominated).to_string(index=False))
    return 0


def _divergence(experiment: Experiment) -> str:
    """What the profile's damage is for this experiment's task, in words."""
    defined = type(experiment.task).divergence
    if defined is ClassificationTask.divergence:
        return "KL divergence from the teacher's outputs"
    if defined is RegressionTask.divergence:
        return "squared difference from the teacher's outputs over their variance"
    return f"{type(experiment.task).__name__}.divergence from the teacher's outputs"


def _bar(value: float, largest: float, width: int = 20) -> str:
    return "#" * round(width * value / largest) if largest > 0 else ""


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
    ref = ref or result.meta.experiment_ref
    if not ref:
        raise EdgeCompressError(
            f"study {result.study_name!r} does not record its experiment file; pass "
            "--experiment FILE.py:NAME."
        )
    return load_experiment(ref)


if __name__ == "__main__":
    sys.exit(main())
