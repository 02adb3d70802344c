"""Benchmark: each technique alone and all together, against one global pruning ratio.

    .venv/bin/python bench/techniques.py [--trials 24] [--workers 2] [--speedup 25]

On the MNIST-1D example. For each space (bench/mnist1d_variants.py: structured pruning alone,
low-rank alone, unstructured sparsity alone with gzip size as a third objective, and every
technique in one joint space) a fresh study runs ``--trials`` trials at the budget teacher
latency / ``--speedup``; from its trials we report the best accuracy under that budget and
under teacher / 50, and the largest speedup reached within 1 point (val) of the teacher.

Side by side, what a user does without a search: one global ratio for every channel group
(torch-pruning, L1, the same fine-tuning with the teacher), swept, in fp32 and then int8.
Writes bench/techniques.md and bench/techniques.json. Latencies are ratios to the teacher timed
in the same rounds on this (noisy, shared) machine, times the teacher's latency.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from edgecompress import EdgeCompressError, load_experiment, search
from edgecompress.evaluators import measure_absolute_ms
from edgecompress.gate import CpuGate
from edgecompress.plan import Plan
from edgecompress.search import space_of
from edgecompress.search.trial import reference_of, run_trial
from edgecompress.targets import describe_device

HERE = Path(__file__).parent
WORK = HERE / "_work"
VARIANTS = {
    "prune": "pruning alone",
    "rank": "low-rank alone",
    "sparsity": "sparsity alone",
    "everything": "all techniques",
}
RATIOS = (0.5, 0.7, 0.8, 0.9, 0.95)
FALLBACK = {"rank": 5.0}  # low-rank alone reaches about 8x on this model


def summarize(frame: pd.DataFrame, teacher: pd.Series, reference_ms: float) -> dict[str, Any]:
    """Best val (and its test) accuracy under /budgets; largest speedup within 1 point."""
    out: dict[str, Any] = {}
    for s in (25, 50):
        ok = frame[frame["latency_ms"] <= reference_ms / s]
        if len(ok):
            best = ok.sort_values(["accuracy", "latency_ms"], ascending=[False, True]).iloc[0]
            out[f"x{s}"] = {
                k: float(best[k])
                for k in ("accuracy", "test_accuracy", "latency_ms", "size_mb", "size_gz_mb")
            }
            out[f"x{s}"]["trial"] = best["baseline"] or f"searched #{best['trial']}"
    near = frame[frame["accuracy"] >= teacher["accuracy"] - 0.01]
    if len(near):
        fast = near.sort_values("latency_ms").iloc[0]
        out["within_1pt"] = {
            "speedup": reference_ms / float(fast["latency_ms"]),
            "accuracy": float(fast["accuracy"]),
            "test_accuracy": float(fast["test_accuracy"]),
            "size_gz_mb": float(fast["size_gz_mb"]),
            "trial": fast["baseline"] or f"searched #{fast['trial']}",
        }
        smallest = near.sort_values("size_gz_mb").iloc[0]
        out["smallest_within_1pt_gz_mb"] = float(smallest["size_gz_mb"])
    return out


def run_variant(name: str, trials: int, workers: int, speedup: float) -> dict[str, Any]:
    """A study at teacher / ``speedup``; a space that cannot reach it is refused (the message
    is kept) and searched at its fallback budget. Sparsity alone gains no speed: its budget is
    the teacher's latency (/0.9) and its third objective the gzip size."""
    experiment = load_experiment(f"{HERE / 'mnist1d_variants.py'}:{name}")
    study = f"{experiment.name}-{int(time.time())}"
    start = time.perf_counter()
    refused = None
    for budget in (0.9,) if name == "sparsity" else (speedup, FALLBACK.get(name)):
        if budget is None:
            return {"variant": name, "refused": refused}
        try:
            result = search(
                experiment,
                trials=trials,
                workers=workers,
                study=f"{study}-x{budget:g}",
                storage=f"sqlite:///{WORK / 'techniques.db'}",
                speedup=budget,
            )
            break
        except EdgeCompressError as exc:
            refused = str(exc)
    teacher = result.trials.set_index("baseline").loc["teacher"]
    ref = float(result.meta.reference_latency_ms)
    return {
        "variant": name,
        "study": study,
        "budget_speedup": budget,
        "refused_at_requested_budget": refused,
        "reference_ms": ref,
        "teacher": {k: float(teacher[k]) for k in ("accuracy", "test_accuracy", "size_gz_mb")},
        "trials": len(result.trials),
        "failed": result.failed,
        "wall_s": time.perf_counter() - start,
        **summarize(result.trials, teacher, ref),
    }


def global_ratio_sweep() -> list[dict[str, Any]]:
    """One ratio for every channel group (L1), fine-tuned with the teacher; fp32 and int8."""
    experiment = load_experiment(f"{HERE / 'mnist1d_variants.py'}:prune")
    reference = reference_of(experiment)
    with CpuGate().measure():
        ref_ms = measure_absolute_ms(reference.onnx, reference.feed, threads=1)
    everything = load_experiment(f"{HERE / 'mnist1d_variants.py'}:everything")
    space = space_of(everything, reference)
    identity = {k.name: k.param(k.identity) for k in space.knobs() if k.identity is not None}
    rows = []
    for ratio in RATIOS:
        for bits in (32, 8):
            params = {n: (ratio if n.startswith("prune.") else v) for n, v in identity.items()}
            params.update({n: bits for n in params if n.startswith("bits.")})
            plan = space.sample(optuna.trial.FixedTrial(params))  # type: ignore[arg-type]
            assert plan["method.prune_criterion"] == "l1"
            with tempfile.TemporaryDirectory() as tmp:
                outcome = run_trial(
                    everything,
                    Plan(dict(plan)),
                    reference=reference,
                    reference_ms=ref_ms,
                    artifacts=tmp,
                    artifact_id="bench",
                )
            m = outcome.metrics
            rows.append(
                {
                    "ratio": ratio,
                    "bits": bits,
                    "accuracy": m["accuracy"],
                    "test_accuracy": m["test_accuracy"],
                    "latency_ms": m["latency_ms"],
                    "speedup": ref_ms / m["latency_ms"],
                    "size_gz_mb": m["size_gz_mb"],
                }
            )
            print(rows[-1], flush=True)
    return rows


def _acc(d: dict[str, Any] | None) -> str:
    if not d:
        return "none"
    return (
        f"{d['accuracy']:.3f} / {d['test_accuracy']:.3f} ({d['latency_ms']:.4f} ms, {d['trial']})"
    )


def report(variants: list[dict[str, Any]], sweep: list[dict[str, Any]], args: Any) -> str:
    device = describe_device()
    lines = [
        "# Techniques benchmark (issue 3)",
        "",
        f"Command: `.venv/bin/python bench/techniques.py --trials {args.trials} --workers "
        f"{args.workers} --speedup {args.speedup:g}`",
        "",
        f"Machine: {device['cpu_model']}, {device['logical_cpus']} logical CPUs, ISA "
        f"{' '.join(device['isa_flags'])}, onnxruntime {device['onnxruntime']}; target: 1 "
        "thread, batch 1. Accuracy: val (selection) / test (held out).",
        "",
        "| space | trials (failed) | best at teacher/25 | best at teacher/50 | largest speedup "
        "within 1 pt (val / test acc) | smallest gzip size within 1 pt | wall |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        if "refused" in v:
            lines.append(f"| {VARIANTS[v['variant']]} | refused: {v['refused'][:160]} | | | | | |")
            continue
        w = v.get("within_1pt")
        within = (
            f"{w['speedup']:.1f}x ({w['accuracy']:.3f} / {w['test_accuracy']:.3f}, {w['trial']})"
            if w
            else "none"
        )
        size = v.get("smallest_within_1pt_gz_mb")
        lines.append(
            f"| {VARIANTS[v['variant']]} (budget /{v['budget_speedup']:g}) | {v['trials']} "
            f"({v['failed']}) | {_acc(v.get('x25'))} | {_acc(v.get('x50'))} | {within} | "
            f"{'-' if size is None else f'{size:.3f} MB'} (teacher "
            f"{v['teacher']['size_gz_mb']:.3f}) | {v['wall_s'] / 60:.1f} min |"
        )
    lines += [
        "",
        "One global ratio (no search): L1 channel pruning of every group, the same "
        "fine-tuning with the teacher.",
        "",
        "| ratio | precision | val / test acc | latency | speedup | gzip size |",
        "|---|---|---|---|---|---|",
    ]
    for r in sweep:
        lines.append(
            f"| {r['ratio']:.2f} | {'int8' if r['bits'] == 8 else 'fp32'} | "
            f"{r['accuracy']:.3f} / {r['test_accuracy']:.3f} | {r['latency_ms']:.4f} ms | "
            f"{r['speedup']:.1f}x | {r['size_gz_mb']:.3f} MB |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--speedup", type=float, default=25.0)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--no-sweep", action="store_true")
    args = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    sweep = [] if args.no_sweep else global_ratio_sweep()
    variants = [run_variant(v, args.trials, args.workers, args.speedup) for v in args.variants]
    text = report(variants, sweep, args)
    (HERE / "techniques.md").write_text(text)
    payload = {"variants": variants, "global_ratio": sweep}
    (HERE / "techniques.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    print(text)


if __name__ == "__main__":
    main()
