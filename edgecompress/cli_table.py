"""``edgecompress table ...``: build, plan, import and validate target latency tables."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from edgecompress.errors import EdgeCompressError
from edgecompress.experiment import Experiment, load_experiment
from edgecompress.search.engine import checked_reference, space_of
from edgecompress.spaces import Space
from edgecompress.tables.build import build_table
from edgecompress.tables.bundle import write_bundle
from edgecompress.tables.validate import validate
from edgecompress.targets import calibrate, describe_device
from edgecompress.targets.imports import read_run
from edgecompress.targets.profile import LOCAL, Profile, load_profile, save_profile
from edgecompress.targets.target import Target

EXAMPLE = "edgecompress.examples.mnist1d:experiment"  # shipped in the package


def add_parser(sub: Any) -> None:
    t = sub.add_parser("table", help="target latency tables: build, plan, import, validate")
    tsub = t.add_subparsers(dest="table_command", required=True)

    b = tsub.add_parser("build", help="measure this machine's table for an experiment's space")
    _target(b, default=LOCAL)
    _experiment(b)
    _enumeration(b)
    b.add_argument(
        "--time-limit",
        type=float,
        help="seconds; finding the kernels must fit in it, measuring them stops and resumes: "
        "what is measured is kept, the same command goes on",
    )

    p = tsub.add_parser("plan", help="write a bundle of micro-models to measure on a device")
    _experiment(p)
    _enumeration(p)
    p.add_argument("-o", "--output", required=True, type=Path, help="bundle folder to write")

    i = tsub.add_parser("import", help="turn a device's run of a bundle into a target")
    i.add_argument("run", type=Path, help="device.csv written by the bundle's run.py")
    _target(i, default=None)
    i.add_argument("--bundle", type=Path, help="the bundle it ran (checks coverage)")

    v = tsub.add_parser("validate", help="predicted against measured latency, on this machine")
    _target(v, default=LOCAL)
    _experiment(v)
    v.add_argument("--samples", type=int, default=50, help="random plans (default 50)")
    v.add_argument("--seed", type=int, default=1, help="of the random plans (default 1)")
    v.add_argument("--format", choices=("table", "json"), default="table")


def _target(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument(
        "--target", default=default, required=default is None, help="target name or folder"
    )
    p.add_argument("--targets", help="folder of targets (default ./targets)")


def _experiment(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", default=EXAMPLE, help=f"FILE.py:NAME (default {EXAMPLE})")


def _enumeration(p: argparse.ArgumentParser) -> None:
    p.add_argument("--levels", type=int, default=9, help="levels per structural knob (default 9)")
    p.add_argument("--random", type=int, default=40, help="random plans added (default 40)")
    p.add_argument(
        "--whole",
        type=int,
        default=150,
        help="more random plans timed whole, to fit the calibration on (default 150; 0: the "
        "plain sum of entries)",
    )


def run(args: argparse.Namespace) -> int:
    commands = {"build": _build, "plan": _plan, "import": _import, "validate": _validate}
    return commands[args.table_command](args)


def _space(ref: str) -> tuple[Experiment, Space]:
    experiment = load_experiment(ref)
    return experiment, space_of(experiment, checked_reference(experiment))


class _Bars:
    """One tqdm bar per phase, on stderr."""

    def __init__(self) -> None:
        self.bars: dict[str, tqdm] = {}

    def __call__(self, phase: str, i: int, n: int) -> None:
        bar = self.bars.get(phase)
        if bar is None:
            bar = self.bars[phase] = tqdm(total=n, desc=phase, unit="", leave=True)
        if bar.total != n:  # the kernels' run goes on to the whole models
            bar.total = n
        bar.update(i + 1 - bar.n)

    def __enter__(self) -> _Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        for bar in self.bars.values():
            bar.close()


def _build(args: argparse.Namespace) -> int:
    experiment, space = _space(args.experiment)
    with _Bars() as bars:
        built = build_table(
            experiment,
            space,
            args.target,
            root=args.targets,
            levels=args.levels,
            random=args.random,
            whole=args.whole,
            time_limit_s=args.time_limit,
            progress=bars,
        )
    state = "complete" if built.complete else "PARTIAL (time limit): run the same command again"
    print(
        f"target {args.target}: table {built.profile.folder / 'table.csv'} ({state}); "
        f"{built.coverage.summary()}; {calibrate.summary(built.profile.require_table().header)}; "
        f"{built.seconds:.0f} s"
    )
    return 0


def _plan(args: argparse.Namespace) -> int:
    experiment, space = _space(args.experiment)
    with _Bars() as bars:
        made = write_bundle(
            experiment,
            space,
            args.output,
            levels=args.levels,
            random=args.random,
            whole=args.whole,
            progress=lambda i, n: bars("plans", i, n),
        )
    print(
        f"bundle {made.path}: {made.micro_models} micro-models from {made.plans} plans "
        f"({len(made.failed_plans)} could not be built), {made.whole_models} models to time "
        f"whole ({len(made.failed_whole)} could not be built). On the device, with onnxruntime and "
        f"numpy: python {made.path / 'run.py'} -o device.csv; then here: edgecompress table "
        "import device.csv --target NAME"
    )
    return 0


def _import(args: argparse.Namespace) -> int:
    manifest = args.bundle / "manifest.csv" if args.bundle else None
    table, coverage = read_run(args.run, manifest=manifest)
    settings = {"threads": int(table.header["threads"]), "batch": int(table.header["batch_size"])}
    try:  # a target the user wrote keeps its fields; the run says how it was measured
        before: Profile | None = load_profile(args.target, args.targets)
    except EdgeCompressError:
        before = None
    base = before.target if before is not None else Target(name=args.target)
    target = replace(base, threads=settings["threads"], batch_size=settings["batch"])
    if before is not None and before.table is not None:
        print(f"target {args.target}: its table is replaced by this run")
    reference = args.bundle / "reference.onnx" if args.bundle else None
    profile = save_profile(
        target, table, reference.read_bytes() if reference else None, args.targets
    )
    device = table.header["device"]
    print(
        f"target {args.target}: {profile.folder} from {args.run} ({device.get('cpu_model')}, "
        f"onnxruntime {device.get('onnxruntime')}); {coverage.summary()}; "
        f"{calibrate.summary(table.header)}"
    )
    if coverage.missing:
        print(
            "edgecompress: entries missing; a candidate that needs one of their kinds cannot be "
            "predicted for this target (the error names the kind). Re-run the bundle on the "
            "device to fill them."
        )
    return 0


def _validate(args: argparse.Namespace) -> int:
    profile = load_profile(args.target, args.targets)
    table = profile.require_table()
    here, there = describe_device()["cpu_model"], table.header["device"].get("cpu_model")
    if here != there:
        raise EdgeCompressError(
            f"target {args.target!r}'s table was measured on {there!r}; validate measures on "
            f"this machine ({here!r}). Validate a table on the device it describes."
        )
    if not profile.reference.is_file():
        raise EdgeCompressError(f"{profile.reference} is missing: rebuild the table")
    if args.samples < 1:
        raise EdgeCompressError(f"--samples {args.samples}: validate needs at least 1 sample")
    experiment, space = _space(args.experiment)
    with _Bars() as bars:
        result = validate(
            experiment,
            space,
            table,
            profile.reference.read_bytes(),
            samples=args.samples,
            seed=args.seed,
            progress=lambda i, n: bars("samples", i, n),
        )
    summary = result.summary()
    if args.format == "json":
        print(json.dumps(summary, indent=2))
        return 0
    print(result.rows.round(4).to_string(index=False))
    print(
        f"\n{summary['samples']} samples: {100 * summary['within_10pct']:.0f}% within +-10% of "
        f"measured, MAPE {summary['mape']:.1f}%, Spearman {summary['spearman']:.3f}; the "
        f"measurement's own noise {summary['noise_pct']:.1f}% (two measurements of one model, "
        f"in two processes, agree within +-10% for {100 * summary['repeat_within_10pct']:.0f}%)"
    )
    print(f"verdict: {summary['verdict']}" if summary["verdict"] else summary["refused"])
    return 0
