"""A bundle: the micro-models of every kernel an experiment's space can produce, and the runner
that measures them on a device with only onnxruntime and numpy (``table plan``, and the first
half of ``table build``).

Which kernels the space produces is found by building its plans, without fine-tuning (latency
does not depend on the weights' values): each structural knob (pruning, low-rank, student) at
evenly spaced levels from the uncompressed to the most compressed value, alone and together,
each at every precision the space offers (and each int8 method); then random plans of the
space, for the mixtures of precisions and widths a search meets. Every plan's optimized graph
gives its kernels; the distinct ones are written once as micro-models.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import optuna
from onnx import helper, numpy_helper

from edgecompress.compress import compress
from edgecompress.compress.onnx_export import export_onnx
from edgecompress.errors import EdgeCompressError
from edgecompress.evaluators.latency import input_for
from edgecompress.experiment import Experiment
from edgecompress.plan import InvalidPlan, Plan
from edgecompress.spaces import Space, baseline_params, on_grid
from edgecompress.targets import runner
from edgecompress.targets.kernels import Kernel, kernels
from edgecompress.targets.table import COLUMNS

STRUCTURE = ("prune", "rank", "student")
WHOLE_SEED = 1000  # added to the experiment's seed for the random plans timed whole
KEY_COLUMNS = [c for c in COLUMNS if c not in ("latency_ms", "p90_ms", "spread_pct")]
# a plan built only for its latency: no fine-tuning, and the cheapest calibration (the graph
# of static int8 does not depend on how its ranges were found)
LATENCY_ONLY = {
    "finetune.epochs": 0,
    "method.calibration": "minmax",
    "method.calibration_samples": 16,
}


def latency_plan(plan: Plan) -> Plan:
    entries: dict[str, Any] = {**plan.to_dict(), **LATENCY_ONLY}
    if entries.get("method.quant") == "qat":  # QAT exports the same QDQ graph as static
        entries["method.quant"] = "static"
    return Plan(entries)


def enumerate_plans(
    space: Space, *, levels: int = 9, random: int = 40, seed: int = 0
) -> list[Plan]:
    """The plans whose kernels a table measures (see the module docstring), without repeats."""
    knobs = space.knobs()
    structural = [
        k
        for k in knobs
        if k.section in STRUCTURE and k.kind in ("float", "int") and k.fastest is not None
    ]
    sections = sorted({k.section for k in structural})
    groups = [[s] for s in sections] + ([sections] if len(sections) > 1 else [])
    steps = [i / (levels - 1) for i in range(levels)] if levels > 1 else [1.0]
    plans: dict[str, Plan] = {}

    def add(params: dict[str, Any]) -> None:
        plan = space.sample(optuna.trial.FixedTrial(params))  # type: ignore[arg-type]
        plan = latency_plan(plan)
        plans.setdefault(plan.key, plan)

    for precision in _precisions(space):
        for group in groups or [[]]:
            for level in steps if group else [0.0]:
                params = baseline_params(space, "teacher")
                for k in structural:
                    if k.section in group:
                        params[k.name] = on_grid(k, level)
                params.update(precision)
                add(params)
    for plan in random_plans(space, random, seed=seed):
        plans.setdefault(plan.key, plan)
    return list(plans.values())


def random_plans(space: Space, count: int, *, seed: int) -> list[Plan]:
    """``count`` plans drawn at random from the space, as built for their latency."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    plans = []
    for _ in range(count):
        trial = study.ask()
        plans.append(latency_plan(space.sample(trial)))
        study.tell(trial, 0.0)
    return plans


def _precisions(space: Space) -> list[dict[str, Any]]:
    """Optuna params putting every layer at one precision (and one int8 method)."""
    bits = [k for k in space.knobs() if k.section == "bits" and k.kind == "ordinal"]
    methods = [k for k in space.knobs() if k.name == "method.quant" and k.kind == "choice"]
    variants: list[dict[str, Any]] = [{}]
    values = sorted({v for k in bits for v in k.choices if v != k.identity}, reverse=True)
    for value in values:
        params = {
            k.name: k.param(value if value in k.choices else k.identity)  # type: ignore[arg-type]
            for k in bits
        }
        quant = [m for m in (methods[0].choices if methods else ()) if m != "qat"]
        if not quant:
            variants.append(params)
        for method in quant:
            variants.append({**params, "method.quant": method})
    return variants


@dataclass
class Bundle:
    """What ``write_bundle`` made: where, how many micro-models, and what it could not build."""

    path: Path
    micro_models: int
    plans: int
    failed_plans: list[str] = field(default_factory=list)
    complete: bool = True
    whole_models: int = 0
    failed_whole: list[str] = field(default_factory=list)  # other plans, for the calibration


def write_bundle(
    experiment: Experiment,
    space: Space,
    out: Path,
    *,
    levels: int = 9,
    random: int = 40,
    whole: int = 150,
    time_limit_s: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Bundle:
    """Writes ``out/``: ``manifest.csv``, one micro-model and one null model per distinct
    kernel, ``reference.onnx``, ``overhead.onnx``, ``bundle.json`` and ``run.py``; and
    ``whole.csv`` with ``whole`` more random plans' models (``whole/``, each with its kernels'
    keys and weights), measured whole on the device to fit the calibration that maps a sum of
    entries to a model's time (see ``targets.calibrate``)."""
    if (out / "bundle.json").exists():
        raise EdgeCompressError(
            f"{out} already holds a bundle; remove it or choose another folder (-o)"
        )
    deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
    plans = enumerate_plans(space, levels=levels, random=random, seed=experiment.seed)
    # other random plans than the enumeration's (and than validate's, seed 1): the calibration
    # is fitted on models whose kernels the table mostly did not measure exactly, as a
    # search's are
    extra = random_plans(space, whole, seed=experiment.seed + WHOLE_SEED) if whole else []
    total = len(plans) + len(extra)
    feed = input_for(experiment)
    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    failed: list[str] = []
    complete = True
    for i, built in _built(experiment, plans, failed):
        if progress:
            progress(i, total)
        try:
            found = kernels(built, feed, threads=experiment.target.threads)
        except Exception as exc:  # noqa: BLE001 - a graph this decomposition cannot read
            failed.append(f"{plans[i].key}: {type(exc).__name__}: {exc}")
            continue
        for kernel in found:
            key = kernel.layer.key()
            if key not in rows:
                rows[key] = _write(kernel, models, len(rows))
        if deadline is not None and time.monotonic() > deadline:
            complete = i + 1 == len(plans)
            break
    wholes: list[dict[str, Any]] = []
    failed_whole: list[str] = []
    for i, built in _built(experiment, extra if complete else [], failed_whole):
        if progress:
            progress(len(plans) + i, total)
        try:
            found = kernels(built, feed, threads=experiment.target.threads)
        except Exception as exc:  # noqa: BLE001
            failed_whole.append(f"{extra[i].key}: {type(exc).__name__}: {exc}")
            continue
        name = f"whole/w{len(wholes):03d}.onnx"
        (out / "whole").mkdir(exist_ok=True)
        (out / name).write_bytes(built)
        layers = [{**k.layer.row(), "weights": k.layer.weights} for k in found]
        wholes.append({"id": f"w{len(wholes):03d}", "file": name, "layers": json.dumps(layers)})
        if deadline is not None and time.monotonic() > deadline:
            break  # every kernel is found: fewer whole models only make the calibration cruder
    _write_manifest(out, list(rows.values()))
    if wholes:
        import pandas as pd

        pd.DataFrame(wholes).to_csv(out / "whole.csv", index=False)
    _write_fixed(experiment, out, feed)
    manifest = (out / "manifest.csv").read_bytes()
    meta = {
        "name": experiment.name,
        "experiment": experiment.ref or experiment.name,
        "levels": levels,
        "random": random,
        "whole": whole,
        "whole_models": len(wholes),
        "failed_whole": len(failed_whole),
        "bundle_id": hashlib.sha256(manifest).hexdigest()[:16],
        "threads": experiment.target.threads,
        "batch_size": experiment.target.batch_size,
        "plans": len(plans),
        "failed_plans": len(failed),
        "complete": complete,
        "columns": KEY_COLUMNS,
    }
    (out / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.copyfile(runner.__file__, out / "run.py")
    return Bundle(out, len(rows), len(plans), failed, complete, len(wholes), failed_whole)


def _built(
    experiment: Experiment, plans: list[Plan], failed: list[str]
) -> Iterator[tuple[int, bytes]]:
    """Each plan's index and deployable ONNX file (not fine-tuned); a plan that cannot be built
    is recorded in ``failed`` and skipped."""
    with tempfile.TemporaryDirectory() as tmp:
        for i, plan in enumerate(plans):
            try:
                candidate = compress(experiment, plan, Path(tmp) / str(i))
            except InvalidPlan as exc:
                failed.append(f"{plan.key}: {exc}")
                continue
            yield i, Path(candidate.onnx_path).read_bytes()


def _write(kernel: Kernel, models: Path, index: int) -> dict[str, Any]:
    micro, null = kernel.micro(), kernel.null()
    name = f"k{index:05d}"
    (models / f"{name}.onnx").write_bytes(micro)
    null_name = "null-" + hashlib.sha256(null).hexdigest()[:16] + ".onnx"
    if not (models / null_name).exists():
        (models / null_name).write_bytes(null)
    return {
        "id": name,
        "file": f"models/{name}.onnx",
        "null_file": f"models/{null_name}",
        **kernel.layer.row(),
    }


def _write_manifest(out: Path, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    columns = ["id", "file", "null_file", *KEY_COLUMNS]
    pd.DataFrame(rows, columns=columns).to_csv(out / "manifest.csv", index=False)


def _write_fixed(experiment: Experiment, out: Path, feed: dict[str, np.ndarray]) -> None:
    """``reference.onnx`` (a fixed MLP every measurement is a ratio to) and ``overhead.onnx``
    (the model's own inputs and outputs with no work: the fixed cost of one call)."""
    (out / "reference.onnx").write_bytes(reference_model())
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(
            experiment.model().eval(), experiment.example_input, Path(tmp) / "m", experiment.inputs
        )
        graph = onnx.load(str(path))
    import onnxruntime as ort

    outputs = ort.InferenceSession(
        graph.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, feed)
    inputs = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
        for k, v in feed.items()
    ]
    # no node: each output is fed as an input and handed back
    infos = [
        helper.make_tensor_value_info(
            info.name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)
        )
        for value, info in zip(outputs, graph.graph.output, strict=True)
    ]
    model = helper.make_model(
        helper.make_graph([], "overhead", inputs + infos, infos),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    (out / "overhead.onnx").write_bytes(model.SerializeToString())


def reference_model() -> bytes:
    """A fixed two-layer MLP (128 -> 256 -> 128, seeded weights): the yardstick of a table."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((128, 256)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((256, 128)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "reference",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 128])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 128])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()
