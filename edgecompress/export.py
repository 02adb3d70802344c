"""export(): a trial of the study as a self-contained .onnx plus a .json manifest, verified."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgecompress import __version__
from edgecompress.errors import EdgeCompressError, NoFeasibleTrial
from edgecompress.evaluators import OnnxMetrics, measure_ratio, session
from edgecompress.experiment import Experiment
from edgecompress.gate import CpuGate
from edgecompress.inputs import leaves
from edgecompress.search import Result
from edgecompress.search.costing import measurable_here
from edgecompress.search.front import download
from edgecompress.search.trial import reference_of
from edgecompress.targets import describe_device
from edgecompress.targets.device import package_versions


def pick_trial(result: Result, trial: int | None) -> int:
    """The trial number to export: the given one, or the best feasible one."""
    if trial is None:
        best = result.best()
        if best is None:
            raise NoFeasibleTrial(
                f"study {result.study_name!r} has no trial within the budget of "
                f"{result.budget_ms:.4f} ms, so there is no best trial to export. Pick one of the "
                "closest trials shown by `edgecompress front` with --trial N, or search further."
            )
        return int(best["trial"])
    if trial not in set(result.trials["trial"]):
        done = ", ".join(str(t) for t in result.trials["trial"]) or "none"
        raise EdgeCompressError(
            f"study {result.study_name!r} has no completed trial {trial}. Completed trials: {done}."
        )
    return trial


def export(
    experiment: Experiment,
    result: Result,
    path: str | Path,
    *,
    trial: int | None = None,
    remeasure: bool = True,
    formats: tuple[str, ...] = ("onnx",),
) -> dict[str, Any]:
    """Writes ``path`` (.onnx) and the manifest beside it (.json); returns the manifest.

    The ONNX file recorded with the trial is checked before anything is written: the study's
    metric on the validation (and test) split, recomputed now in the study's runtime (ONNX
    Runtime or OpenVINO), must equal the recorded one. An existing file at ``path`` is replaced
    only once that check passed.
    ``remeasure`` also times it again against the reference and records that latency.
    ``formats``: ``"ort"`` also writes the ONNX Runtime Mobile format beside it (``.ort``,
    converted by ONNX Runtime's own converter), checked the same way (its metric must equal
    the recorded one) and re-measured; the manifest's ``formats`` describes each file.
    """
    path = Path(path)
    if path.suffix != ".onnx":
        raise EdgeCompressError(f"export path {str(path)!r} must end in .onnx")
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise EdgeCompressError(
            f"export formats {unknown} are not known: choose among {', '.join(FORMATS)} (the "
            ".onnx file is always written)."
        )
    runtime = _runtime(result)
    if "ort" in formats and runtime != "onnxruntime":
        raise EdgeCompressError(
            f"--format ort is ONNX Runtime Mobile's format; study {result.study_name!r} was "
            f"measured on {runtime}: export the .onnx alone (--format onnx)."
        )
    _check_writable(path)
    number = pick_trial(result, trial)
    record = result.records(result.trials[result.trials["trial"] == number])[0]
    with tempfile.TemporaryDirectory() as tmp:
        model = download(result, number, Path(tmp) / "model.onnx")
        _verify(experiment, result, model, record)
        manifest = _manifest(result, record)
        manifest.update(_graph_names(model))
        manifest["reproduce"] = provenance(experiment, record["trial"])
        here = remeasure and measurable_here(result)
        if here:
            manifest["metrics"]["latency_ms_remeasured"] = _remeasure(experiment, result, model)
        elif remeasure:  # its latency is another device's, from that device's table
            manifest["metrics"]["latency_ms_remeasured"] = None
        files = {"onnx": {"file": path.name, "size_mb": model.stat().st_size / 1e6}}
        converted = {}
        if "ort" in formats:
            converted["ort"] = _to_ort(model, Path(tmp) / "ort")
            _verify(experiment, result, converted["ort"], record, what="converted .ort model")
            files["ort"] = {
                "file": path.with_suffix(".ort").name,
                "size_mb": converted["ort"].stat().st_size / 1e6,
                "metric_verified": True,
                # ONNX Runtime's "fixed" optimizations at level "all": the graph as this
                # machine's CPU runs it (its layout optimizations included)
                "optimized_for": describe_device()["cpu_model"],
                "latency_ms_remeasured": _remeasure(experiment, result, converted["ort"])
                if here
                else None,
            }
        manifest["formats"] = files
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for suffix, file in converted.items():
                _replace(path.with_suffix(f".{suffix}"), file.read_bytes())
            _replace(path, model.read_bytes())
            _replace(
                path.with_suffix(".json"),
                (json.dumps(manifest, indent=2, allow_nan=False) + "\n").encode(),
            )
        except OSError as exc:
            raise EdgeCompressError(
                f"cannot write the export to {str(path)!r} ({exc.strerror or exc}); pass an "
                "-o path in a folder you can write to."
            ) from None
    session(path)  # the written file loads on its own
    return manifest


def _check_writable(path: Path) -> None:
    """The folder of ``path`` exists and is writable, or can be made so: checked before any
    work (a parent that is a file, or a read-only file system, was a raw traceback)."""
    folder = path.parent.absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise EdgeCompressError(
            f"cannot write the export to {str(path)!r}: {str(folder)!r} is a file, not a folder; "
            "pass another -o path."
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise EdgeCompressError(
            f"cannot write the export to {str(path)!r}: the folder {str(folder)!r} is not "
            "writable (read-only, or not yours); pass an -o path in a folder you can write to."
        )


def _replace(path: Path, data: bytes) -> None:
    """``path`` holds ``data``, written beside it first: an existing file is replaced whole or
    not at all."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _verify(
    experiment: Experiment,
    result: Result,
    model: Path,
    record: dict[str, Any],
    what: str = "stored model",
) -> None:
    """The study's metric of the file, recomputed now in the study's runtime (ONNX Runtime or
    OpenVINO) on the validation (and test) split, equals the recorded one (to 1e-5 relative: a
    trial scored on another machine's CPU may differ in the last float digits of a continuous
    metric; one sample in 2,000 changes an accuracy by 5e-4)."""
    name = result.metric
    if name not in experiment.task.metric_names:
        raise EdgeCompressError(
            f"study {result.study_name!r} optimised {name!r}, which the experiment's task "
            f"({type(experiment.task).__name__}) does not score "
            f"({', '.join(experiment.task.metric_names)}): export it with the experiment that "
            "searched it (--experiment FILE.py:NAME)."
        )
    splits = [("val", name)]
    if experiment.task.test is not None and record[f"test_{name}"] is not None:
        splits.append(("test", f"test_{name}"))
    # the stored file in the runtime the study scored it with; a converted .ort in ONNX Runtime
    scorer = OnnxMetrics(
        experiment.task,
        experiment.inputs,
        _runtime(result) if what == "stored model" else "onnxruntime",
    )
    for split, key in splits:
        now = scorer.scores(model, split)[name]
        if not math.isclose(now, record[key], rel_tol=1e-5, abs_tol=1e-9):
            why = (
                "The model or the data changed since the search (another experiment file, "
                "other data?)."
                if what == "stored model"
                else "The conversion changed the model's outputs; export the .onnx alone."
            )
            raise EdgeCompressError(
                f"trial {record['trial']}: the {what}'s {split} {name} is {now:.6f} here, "
                f"but the study recorded {record[key]:.6f}. Nothing was written. {why}"
            )


FORMATS = ("onnx", "ort")


def _to_ort(model: Path, folder: Path) -> Path:
    """``model`` in the ONNX Runtime Mobile format (``.ort``), by ONNX Runtime's converter with
    its fixed optimizations (the graph as this runtime optimizes it)."""
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    folder.mkdir(parents=True, exist_ok=True)
    source = folder / model.name
    source.write_bytes(model.read_bytes())
    said = io.StringIO()  # the converter prints its progress; kept out of the user's output
    try:
        with contextlib.redirect_stdout(said):
            convert_onnx_models_to_ort(
                source, output_dir=folder, optimization_styles=[OptimizationStyle.Fixed]
            )
    except Exception as exc:  # noqa: BLE001 - the converter's own failure, reported
        raise EdgeCompressError(
            f"ONNX Runtime could not convert the model to .ort ({type(exc).__name__}: "
            f"{str(exc)[:300]}). Nothing was written; export the .onnx alone."
        ) from None
    found = sorted(folder.glob(f"{model.stem}*.ort"))
    if not found:
        raise EdgeCompressError(
            "ONNX Runtime's converter wrote no .ort file ("
            + " / ".join(said.getvalue().strip().splitlines()[-2:])
            + "). Nothing was written; export the .onnx alone."
        )
    return found[0]


def _runtime(result: Result) -> str:
    """The runtime the study measured and scored its trials with."""
    return result.meta.runtime


def _remeasure(experiment: Experiment, result: Result, model: Path) -> float:
    """Latency now: ratio to the reference measured now, times the study's reference latency."""
    reference = reference_of(experiment)
    threads = result.meta.threads  # as the study measured, whatever the file
    with CpuGate().measure():
        m = measure_ratio(
            model,
            reference.onnx,
            reference.feed,
            threads=threads,
            runtime=_runtime(result),
        )
    return m.ratio * result.meta.reference_latency_ms


def _manifest(result: Result, record: dict[str, Any]) -> dict[str, Any]:
    name = result.metric
    keys = (
        name,
        f"test_{name}",
        "latency_ms",
        "size_mb",
        "size_gz_mb",
        "latency_spread_pct",
    )
    meta = result.meta
    notes = record.get("notes") or {}
    return {
        "study": result.study_name,
        "trial": record["trial"],
        "baseline": record["baseline"] or None,
        "plan": record["plan"],
        "quantization": notes.get("quantization"),
        "student": notes.get("student"),
        "notes": notes,
        "metrics": {
            **{k: record[k] for k in keys},
            # against the uncompressed model timed at the study's start, as the front shows it
            "speedup": meta.reference_latency_ms / record["latency_ms"],
        },
        "metric": name,
        "metric_direction": result.directions()[0],
        "metric_split": f"val (selection); test_{name} is the held-out test split",
        "budget_ms": meta.budget_ms,
        "speedup_budget": meta.speedup,
        "feasible": record["feasible"],
        "reference_latency_ms": meta.reference_latency_ms,
        # below 1: the study measured with fewer rounds (EDGECOMPRESS_MEASURE_EFFORT), noisier
        "measure_effort": meta.measure_effort,
        "target": {
            **meta.target,
            "searched_on": meta.device,
            "exported_on": describe_device(),
        },
        "versions": package_versions(),
    }


def _graph_names(model: Path) -> dict[str, Any]:
    """The deployed file's own input and output names, as a runtime feeds and reads them, and
    their shapes (``"batch"``, ``"sequence"``: the dimensions it takes at any size)."""
    graph = onnx.load(str(model), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    outputs = list(graph.output)

    def shape(value: Any) -> list[int | str]:  # a dynamic dimension by its label ("batch")
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    return {
        "input": inputs[0].name,
        "output": outputs[0].name,
        "inputs": [i.name for i in inputs],
        "outputs": [o.name for o in outputs],
        "shapes": {v.name: shape(v) for v in (*inputs, *outputs)},
    }


def provenance(experiment: Experiment, trial: int) -> dict[str, Any]:
    """What reproduces the exported model: the experiment file and its hash, the teacher's
    weights' hash, each data split's hash (inputs and labels, in order), the seeds, and the
    version and source revision of edgecompress that exported it. A hash that cannot be
    computed is None, with the reason beside it."""
    out: dict[str, Any] = {"experiment": experiment.ref, "experiment_name": experiment.name}
    file = Path(experiment.ref.rsplit(":", 1)[0]) if experiment.ref else None
    out["experiment_file_sha256"] = _sha256_file(file) if file and file.is_file() else None
    digest = hashlib.sha256()
    for name, tensor in sorted(experiment.model().state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    out["teacher_sha256"] = digest.hexdigest()
    data: dict[str, str | None] = {}
    for split in ("train", "val", "test"):
        try:
            x, y = experiment.task.arrays(split)
        except ValueError:  # the task has no such split
            data[split] = None
            continue
        split_digest = hashlib.sha256()
        for _, array in (*leaves(x), (None, y)):
            split_digest.update(np.ascontiguousarray(array).tobytes())
        data[split] = split_digest.hexdigest()
    out["data_sha256"] = data
    out["seed"] = experiment.seed
    out["finetune_seed"] = (
        f"{experiment.seed + trial} (the experiment's seed plus the trial's number; a retried "
        "trial repeats its original's)"
    )
    out["edgecompress"] = {"version": __version__, **_source_revision()}
    return out


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _source_revision() -> dict[str, Any]:
    """The git revision of the edgecompress source that runs, and whether it has uncommitted
    changes; None (with why) for an installed wheel or where git is missing."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"revision": None, "revision_note": "not a git checkout (an installed package)"}
    return {"revision": head, "modified": bool(status.strip())}
