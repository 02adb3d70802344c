"""Benchmark: what each kernel costs inside a whole model, against what the table says.

    .venv/bin/python bench/in_context.py [--models 20] [--worst 6] [--rounds 30]

Needs the table ``bench/latency_table.py`` builds (bench/_work/targets/local-cpu). For each of
the build's whole models (the first ``--models``, plus the ``--worst`` the calibration predicts
worst on the build's own times), the optimized graph is cut after every node and each prefix is
timed against the table's reference in interleaved rounds; node ``j``'s cost *in context* is
prefix ``j`` less prefix ``j - 1``. No profiler is involved: ONNX Runtime's profiler adds 2-4 us
to every node, and its per-node times, summed, predicted whole models no better than the table.

Reports, per class of kernel (entries of at least 5 us), the in-context cost over the table's
entry and over the calibrated entry; for the kernels that stream large weights (at least
0.5 MB), the bandwidth alone and in context; and per model its prediction's error, what its
streaming kernels cost in context over their entries against the calibration's cold-weights term,
and what its other kernels cost over their calibrated entries. Writes bench/in_context.json.
Timings are this machine's, noisy and shared: a prefix's time carries ~1-2% noise, so a small
node's cost is only good to 1-2 us.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd

from edgecompress.targets import kernels as kernels_of
from edgecompress.targets.calibrate import Calibration, _cold, class_of
from edgecompress.targets.imports import _layers
from edgecompress.targets.profile import load_profile
from edgecompress.targets.runner import Runner, Timed

HERE = Path(__file__).parent
TARGETS = HERE / "_work" / "targets"
SIZABLE_MS = 0.005
STREAMING_BYTES = 0.5e6


def prefixes(graph: onnx.ModelProto) -> list[bytes]:
    """The optimized graph with no node (its input handed back), then cut after each node."""
    cut = []
    for j in range(-1, len(graph.graph.node)):
        model = onnx.ModelProto()
        model.CopyFrom(graph)
        del model.graph.node[:]
        model.graph.node.extend(graph.graph.node[: j + 1])
        out = graph.graph.node[j].output[0] if j >= 0 else graph.graph.input[0].name
        del model.graph.output[:]
        model.graph.output.append(onnx.ValueInfoProto(name=out))
        cut.append(model.SerializeToString())
    return cut


def in_context(runner: Runner, table: Any, data: bytes) -> dict[str, Any]:
    """One whole model: each node's cost in context, its entry, its calibrated entry."""
    found = kernels_of.kernels(data, Timed(data, runner.threads, optimize=True).feed)
    graph = found[0].graph
    unit = float(table.header["reference_ms"])  # as `table validate` measures
    times = [runner.ratio(m, optimize=False)[0] * unit for m in prefixes(graph)]
    whole = runner.ratio(data)[0] * unit
    calibration = table.calibration
    nodes = []
    for kernel, cost in zip(found, np.diff(times), strict=True):
        layer = kernel.layer
        entry = table.entry(layer)[0]
        a, b = calibration.coefficients(class_of(layer))
        nodes.append(
            {
                "class": class_of(layer),
                "weights": layer.weights,
                "entry_ms": entry,
                "calibrated_ms": a * entry + b,
                "in_context_ms": float(cost),
            }
        )
    return {
        "whole_ms": whole,
        "predicted_ms": table.predict([k.layer for k in found]).latency_ms,
        "no_node_ms": times[0],
        "all_nodes_ms": times[-1],
        "nodes": nodes,
    }


def summary(models: dict[str, dict[str, Any]], calibration: Calibration) -> dict[str, Any]:
    rows = pd.DataFrame([n | {"model": m} for m, r in models.items() for n in r["nodes"]])
    sizable = rows[rows["entry_ms"] >= SIZABLE_MS]
    by_class = {}
    for cls, group in sizable.groupby("class"):
        over_entry = group["in_context_ms"] / group["entry_ms"]
        over_cal = group["in_context_ms"] / group["calibrated_ms"]
        by_class[cls] = {
            "kernels": len(group),
            "in_context_over_entry": np.percentile(over_entry, [25, 50, 75]).round(2).tolist(),
            "in_context_over_calibrated": np.percentile(over_cal, [25, 50, 75]).round(2).tolist(),
        }
    streaming = rows[rows["weights"] >= STREAMING_BYTES]
    gbps = [
        {
            "model": s["model"],
            "class": s["class"],
            "mb": round(s["weights"] / 1e6, 2),
            "alone_gb_s": round(s["weights"] / 1e6 / max(s["entry_ms"], 1e-6), 1),
            "in_context_gb_s": round(s["weights"] / 1e6 / max(s["in_context_ms"], 1e-6), 1),
        }
        for _, s in streaming.iterrows()
    ]
    errors = []
    for name, r in models.items():
        nodes = pd.DataFrame(r["nodes"])
        big = nodes[nodes["weights"] >= STREAMING_BYTES]
        rest = nodes[nodes["weights"] < STREAMING_BYTES]
        weights_mb = float(nodes["weights"].sum()) / 1e6
        errors.append(
            {
                "model": name,
                "error_pct": round(100 * (r["predicted_ms"] / r["whole_ms"] - 1), 1),
                # the prefixes' own account of the model (1 call, its inputs handed back)
                "prefix_sum_vs_whole_pct": round(100 * (r["all_nodes_ms"] / r["whole_ms"] - 1), 1),
                # the streaming kernels in context less their entries, against the term the
                # calibration adds for a model's weights being out of cache
                "streaming_over_entry_us": round(1e3 * _gap(big, "entry_ms"), 1),
                "cold_term_us": round(
                    1e3 * calibration.ms_per_mb * _cold(weights_mb, calibration.capacity_mb), 1
                ),
                # every other kernel in context less its calibrated entry
                "other_over_calibrated_us": round(1e3 * _gap(rest, "calibrated_ms"), 1),
            }
        )
    return {"by_class": by_class, "streaming": gbps, "models": errors}


def _gap(nodes: pd.DataFrame, column: str) -> float:
    return float((nodes["in_context_ms"] - nodes[column]).sum())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", type=int, default=20, help="the build's first N whole models")
    p.add_argument("--worst", type=int, default=6, help="and the N predicted worst")
    p.add_argument("--rounds", type=int, default=30, help="rounds per prefix")
    p.add_argument("--summary-only", action="store_true", help="re-summarize bench/in_context.json")
    args = p.parse_args()
    profile = load_profile("local-cpu", TARGETS)
    table = profile.require_table()
    out = HERE / "in_context.json"
    if args.summary_only:
        report = json.loads(out.read_text())
        report["summary"] = summary(report["models"], table.calibration)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report["summary"], indent=2))
        return
    build = profile.folder / "build"
    runs = pd.read_csv(build / "device-whole.csv", keep_default_na=False)
    runs = runs[runs["status"] == "ok"].set_index("id")
    files = pd.read_csv(build / "bundle" / "whole.csv", keep_default_na=False).set_index("id")
    error = pd.Series(
        {
            i: table.predict(_layers(r["layers"])).latency_ms / float(r["latency_ms"]) - 1
            for i, r in runs.iterrows()
        }
    )
    chosen = list(runs.index[: args.models])
    chosen += [i for i in error.abs().sort_values(ascending=False).index if i not in chosen][
        : args.worst
    ]
    # a whole model's measurement (`Runner.ratio`: 3 x rounds, blocks of 4 x block_ms), with
    # blocks of 8 ms: a prefix is timed as a whole model is
    runner = Runner(
        profile.reference.read_bytes(),
        threads=int(table.header["threads"]),
        rounds=max(1, args.rounds // 3),
        block_ms=2.0,
    )
    models = {}
    for n, name in enumerate(chosen):
        data = (build / "bundle" / files.loc[name, "file"]).read_bytes()
        models[name] = in_context(runner, table, data)
        r = models[name]
        print(
            f"[{n + 1}/{len(chosen)}] {name}: whole {1e3 * r['whole_ms']:.1f} us, predicted "
            f"{100 * (r['predicted_ms'] / r['whole_ms'] - 1):+.1f}%",
            flush=True,
        )
    report = {
        "args": vars(args),
        "reference_ms": {"table": table.header["reference_ms"], "now": runner.reference_ms},
        "summary": summary(models, table.calibration),
        "models": models,
    }
    out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
