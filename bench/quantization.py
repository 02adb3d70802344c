"""Benchmark: every quantization form and distilled students, against the teacher, in one run.

    .venv/bin/python bench/quantization.py [--search-trials 20] [--speedup 5] [--search-only]

On the MNIST-1D CNN (examples/mnist1d.py) and a Linear-heavy MLP (examples/mnist1d_mlp.py).
Each row is one plan run through the same trial code as the search (compress, fine-tune where
the plan changes the model, export, quantize, ONNX Runtime accuracy and latency): fp32; static
int8 per calibration method, and with stochastic rounding; dynamic int8; fp16; int4 weights on
the Linear layers; QAT int8; 4-bit weights everywhere (int4 on Linear layers, emulated on
convolutions: the accuracy of the fake-quantized model, fp32 kernels); a student derived from
the teacher and one from a family, each distilled from the teacher and trained on the labels
alone. Then a short student search (student, distillation
and precision knobs) on the CNN, and its best trial's student retrained without the teacher.

Latency: the median ratio to the teacher timed in the same rounds, times the teacher's latency
(1 thread, batch 1). Writes bench/quantization.md and bench/quantization.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx

from edgecompress import StudentFamily, load_experiment, search
from edgecompress.compress import layer_nodes
from edgecompress.evaluators import measure_absolute_ms
from edgecompress.experiment import Experiment
from edgecompress.gate import CpuGate
from edgecompress.plan import Plan
from edgecompress.search.trial import Reference, reference_of, run_trial
from edgecompress.targets import Target, describe_device
from edgecompress.tasks.mnist1d import Teacher

HERE = Path(__file__).parent
ROOT = HERE.parent
WORK = HERE / "_work"
MODELS = {"cnn": "examples/mnist1d.py:experiment", "mlp": "examples/mnist1d_mlp.py:experiment"}
LABELS_ONLY = {"finetune.kd_weight": 0.0, "finetune.hint_weight": 0.0}


def forms(layers: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Plans by name; ``layers``: layer -> ONNX op of the teacher."""
    every = {f"bits.{layer}": 8 for layer in layers}
    linear4 = {f"bits.{layer}": 4 for layer, op in layers.items() if op != "Conv"}
    return {
        "fp32 (teacher)": {},
        "static int8, minmax": {**every, "method.calibration": "minmax"},
        "static int8, entropy": {**every, "method.calibration": "entropy"},
        "static int8, percentile": {**every, "method.calibration": "percentile"},
        "static int8, minmax, stochastic rounding": {**every, "method.rounding": "stochastic"},
        "dynamic int8": {**every, "method.quant": "dynamic"},
        "fp16": {f"bits.{layer}": 16 for layer in layers},
        "int4 weights (Linear layers; convs fp32)": linear4,
        "QAT int8 (3 epochs)": {**every, "method.quant": "qat", "finetune.epochs": 3},
        "4-bit weights, all layers (int4 on Linear, emulated on convs)": {
            f"bits.{layer}": 4 for layer in layers
        },
    }


def students(name: str, layers: dict[str, str]) -> dict[str, dict[str, Any]]:
    """A student derived from the teacher (fewest blocks, half width), with and without the
    teacher, and in int8 (the entries of the layers it dropped are not applied); for the CNN
    also a family member trained from scratch."""
    derived = {"student.depth.stage0": 1, "student.width.stage0": 0.5}
    every = {f"bits.{layer}": 8 for layer in layers}
    plans = {
        "derived student, distilled": dict(derived),
        "derived student, labels only": {**derived, **LABELS_ONLY},
        "derived student, distilled, int8": {**derived, **every},
    }
    if name == "cnn":
        family = {"student.family": "family", "student.width": 0.25, "student.depth": 3}
        plans["family student (64 ch, 3 blocks, from scratch, 20 epochs), distilled"] = {
            **family,
            "finetune.epochs": 20,
        }
        plans["family student (64 ch, 3 blocks, from scratch, 20 epochs), labels only"] = {
            **family,
            "finetune.epochs": 20,
            **LABELS_ONLY,
        }
    return plans


def family_member(width: float, depth: int) -> Teacher:
    return Teacher(channels=max(8, int(256 * width)), blocks=depth)


def run(experiment: Experiment, plan: Plan, reference: Reference, ref_ms: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        outcome = run_trial(
            experiment,
            plan,
            reference=reference,
            reference_ms=ref_ms,
            artifacts=tmp,
            artifact_id="bench",
        )
        m = outcome.metrics
        return {
            "accuracy": m["accuracy"],
            "test_accuracy": m["test_accuracy"],
            "latency_ms": m["latency_ms"],
            "speedup": ref_ms / m["latency_ms"],
            "size_mb": m["size_mb"],
            "wall_s": time.perf_counter() - start,
            "notes": {k: v for k, v in outcome.notes.items() if k != "quantization"},
            "precisions": sorted(set(outcome.notes["quantization"]["precisions"].values())),
        }


def bench_model(name: str) -> dict[str, Any]:
    experiment = load_experiment(str(ROOT / MODELS[name]))
    family = StudentFamily(build=family_member, width=(0.25, 1.0), depth=(1, 6))
    experiment = replace(experiment, student=family, target=Target(emulated_bits=(4,)))
    reference = reference_of(experiment)
    layers = {
        layer: node.rsplit("/", 1)[-1]
        for layer, node in layer_nodes(onnx.load_from_string(reference.onnx)).items()
    }
    with CpuGate().measure():
        ref_ms = measure_absolute_ms(reference.onnx, reference.feed, threads=1)
    rows = {}
    for label, entries in {**forms(layers), **students(name, layers)}.items():
        rows[label] = run(experiment, Plan(entries), reference, ref_ms)
        print(name, label, {k: rows[label][k] for k in ("accuracy", "speedup")}, flush=True)
    return {"model": name, "reference_ms": ref_ms, "rows": rows}


def student_search(trials: int, speedup: float) -> dict[str, Any]:
    """A search over students, distillation and precision on the CNN; its best trial under the
    budget, and the same plan trained on the labels alone."""
    experiment = load_experiment(f"{HERE / 'mnist1d_variants.py'}:students")
    study = f"students-{int(time.time())}"
    result = search(
        experiment,
        trials=trials,
        workers=2,
        study=study,
        storage=f"sqlite:///{WORK / 'quantization.db'}",
        speedup=speedup,
    )
    ref_ms = float(result.meta.reference_latency_ms)
    frame = result.trials
    searched = frame[~frame["baseline"].isin(["teacher", "int8"])]  # students (seeds too)
    feasible = searched[searched["latency_ms"] <= ref_ms / speedup]
    pool = feasible if len(feasible) else searched  # none within the budget: the most accurate
    best = pool.sort_values(["accuracy", "latency_ms"], ascending=[False, True]).iloc[0]
    entries = best["plan"]
    plan = Plan.from_dict(entries) if isinstance(entries, dict) else Plan.from_json(entries)
    reference = reference_of(experiment)
    labels = run(experiment, Plan({**plan.to_dict(), **LABELS_ONLY}), reference, ref_ms)
    return {
        "study": study,
        "trials": len(frame),
        "budget_speedup": speedup,
        "feasible_searched_trials": len(feasible),
        "best": {
            "trial": int(best["trial"]),
            "label": best["baseline"] or "searched",
            "plan": plan.to_dict(),
            "accuracy": float(best["accuracy"]),
            "test_accuracy": float(best["test_accuracy"]),
            "speedup": ref_ms / float(best["latency_ms"]),
        },
        "same_student_labels_only": labels,
    }


def report(models: list[dict[str, Any]], searched: dict[str, Any] | None, args: Any) -> str:
    device = describe_device()
    lines = [
        "# Quantization and distillation benchmark (issue 4)",
        "",
        f"Command: `.venv/bin/python bench/quantization.py --search-trials {args.search_trials}"
        f" --speedup {args.speedup:g}`",
        "",
        f"Machine: {device['cpu_model']}, {device['logical_cpus']} logical CPUs, ISA "
        f"{' '.join(device['isa_flags'])}, onnxruntime {device['onnxruntime']}; 1 thread, "
        "batch 1. Accuracy: val / test. Speedup: teacher latency / latency, timed in the same "
        "rounds.",
    ]
    for m in models:
        lines += [
            "",
            f"## {m['model']} (teacher {m['reference_ms']:.4f} ms)",
            "",
            "| plan | val / test accuracy | latency | speedup | size | precisions |",
            "|---|---|---|---|---|---|",
        ]
        for label, r in m["rows"].items():
            lines.append(
                f"| {label} | {r['accuracy']:.3f} / {r['test_accuracy']:.3f} | "
                f"{r['latency_ms']:.4f} ms | {r['speedup']:.2f}x | {r['size_mb']:.2f} MB | "
                f"{', '.join(r['precisions'])} |"
            )
    if searched:
        b, lab = searched["best"], searched["same_student_labels_only"]
        lines += [
            "",
            f"## Student search on the CNN ({searched['trials']} trials, budget teacher / "
            f"{searched['budget_speedup']:g})",
            "",
            f"{searched['feasible_searched_trials']} student trials (seeds included) met the "
            f"budget. Best: trial #{b['trial']} ({b['label']}): {b['accuracy']:.3f} / "
            f"{b['test_accuracy']:.3f} at "
            f"{b['speedup']:.1f}x. The same plan trained on the labels alone: "
            f"{lab['accuracy']:.3f} / {lab['test_accuracy']:.3f}.",
            "",
            f"Plan: `{json.dumps(b['plan'], sort_keys=True)}`",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--search-trials", type=int, default=20)
    parser.add_argument("--speedup", type=float, default=5.0)
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument(
        "--search-only",
        action="store_true",
        help="keep the per-plan rows of bench/quantization.json; rerun only the student search",
    )
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    models: list[dict[str, Any]] = []
    searched = None

    def save() -> None:
        data = {"models": models, "student_search": searched}
        (HERE / "quantization.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
        (HERE / "quantization.md").write_text(report(models, searched, args))

    if args.search_only:
        models = json.loads((HERE / "quantization.json").read_text())["models"]
    else:
        for name in MODELS:
            models.append(bench_model(name))
            save()
    if not args.skip_search:
        searched = student_search(args.search_trials, args.speedup)
        save()
    print((HERE / "quantization.md").read_text())


if __name__ == "__main__":
    main()
