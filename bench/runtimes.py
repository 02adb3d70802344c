"""The same compressed files on two runtimes (issue 16): ONNX Runtime and OpenVINO, this CPU.

For each model, a fixed set of plans (the teacher in fp32 and fp16, int8 static and dynamic,
every pruning knob at a share of its most then int8 static or dynamic) is built once, untrained,
by the pipeline's ``compress``; each file is timed in each runtime against the teacher's file in
that runtime (the search's interleaved rounds: a speedup is 1 / the median ratio) and scored on
the validation split there (the task's metric: accuracy, or cosine for MiniLM). What it shows:
whether a plan that pays on one runtime pays on the other. Results go to
``bench/runtimes.json``.

    .venv/bin/python bench/runtimes.py --models cnn mlp
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from edgecompress import load_experiment
from edgecompress.compress import compress
from edgecompress.evaluators.latency import measure_ratio
from edgecompress.evaluators.metrics import onnx_outputs
from edgecompress.experiment import Experiment
from edgecompress.plan import Plan
from edgecompress.search.engine import checked_reference, space_of
from edgecompress.spaces import Space, baseline_params, on_grid, replay
from edgecompress.targets import describe_device

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).with_name("runtimes.json")
MODELS = {
    "cnn": "edgecompress.examples.mnist1d:experiment",
    "mlp": "edgecompress.examples.mnist1d_mlp:experiment",
    "minilm": "edgecompress.examples.minilm:experiment",
}
RUNTIMES = ("onnxruntime", "openvino")


def plans(space: Space) -> dict[str, dict[str, Any]]:
    knobs = {k.name: k for k in space.knobs()}
    int8 = baseline_params(space, "int8")
    quant = knobs.get("method.quant")
    offered = quant is not None and quant.kind != "fixed" and "dynamic" in quant.choices
    dynamic = {**int8, quant.name: quant.param("dynamic")} if quant and offered else None
    found: dict[str, dict[str, Any]] = {"fp32": baseline_params(space, "teacher")}
    half = {n: k.param(16) for n, k in knobs.items() if k.section == "bits" and 16 in k.choices}
    if half:
        found["fp16"] = {**found["fp32"], **half}
    found["int8 static"] = int8
    if dynamic is not None:
        found["int8 dynamic"] = dynamic
    prune = [k for k in knobs.values() if k.section == "prune" and k.fastest is not None]
    for share in (0.5, 0.8):
        pruned = {k.name: on_grid(k, share) for k in prune}
        found[f"pruned {share:g} + int8 static"] = {**int8, **pruned}
        if dynamic is not None:
            found[f"pruned {share:g} + int8 dynamic"] = {**dynamic, **pruned}
    return found


def run(name: str, experiment: Experiment, rounds: int) -> list[dict[str, Any]]:
    reference = checked_reference(experiment)
    space = space_of(experiment, reference)
    x, y = experiment.task.arrays("val")
    metric = experiment.metric
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, params in plans(space).items():
            plan = Plan({**replay(space, params).to_dict(), "finetune.epochs": 0})
            path = compress(experiment, plan, Path(tmp) / label.replace(" ", "_")).onnx_path
            row: dict[str, Any] = {"model": name, "plan": label}
            for runtime in RUNTIMES:
                m = measure_ratio(
                    path,
                    reference.onnx,
                    reference.feed,
                    threads=experiment.target.threads,
                    rounds=rounds,
                    runtime=runtime,
                )
                outputs = onnx_outputs(path, experiment.inputs.named(x), runtime=runtime)
                score = experiment.task.evaluate(outputs, y)[metric.name]
                row[runtime] = {"speedup": 1 / m.ratio, "spread_pct": m.spread_pct, "val": score}
            print(
                f"{name} {label}: "
                + ", ".join(
                    f"{r} {row[r]['speedup']:.2f}x (val {row[r]['val']:.4f})" for r in RUNTIMES
                ),
                flush=True,
            )
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["cnn", "mlp"])
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    found = json.loads(OUT.read_text()) if OUT.exists() else {"runs": {}}
    found["device"] = describe_device()
    for name in args.models:
        found["runs"][name] = run(name, load_experiment(MODELS[name]), args.rounds)
        OUT.write_text(json.dumps(found, indent=1) + "\n")


if __name__ == "__main__":
    main()
