"""OpenVINO as a target runtime: what it runs, that latency and metrics come from it, and a
search whose budget is on it, exported and verified there."""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgecompress import Target, load_experiment
from edgecompress.cli import main
from edgecompress.compress import compress
from edgecompress.errors import EdgeCompressError
from edgecompress.evaluators.latency import measure_ratio
from edgecompress.evaluators.metrics import onnx_outputs
from edgecompress.plan import Plan
from edgecompress.search.engine import checked_reference, search, space_of
from edgecompress.search.front import open_result
from edgecompress.spaces import baseline_params, replay
from tests.conftest import TINY


def test_an_openvino_target_is_checked() -> None:
    target = Target(runtime="openvino")
    assert target.execution_provider == "CPU" and target.precisions == Target().precisions
    with pytest.raises(ValueError, match="choose among \\['onnxruntime', 'openvino'\\]"):
        Target(runtime="tensorrt")
    with pytest.raises(ValueError, match="only 'CPU' is measured"):
        Target(runtime="openvino", execution_provider="GPU")


def _built(experiment, space, params: dict, tmp: Path) -> Path:  # type: ignore[no-untyped-def]
    plan = Plan({**replay(space, params).to_dict(), "finetune.epochs": 0})
    return compress(experiment, plan, tmp).onnx_path


def test_openvino_scores_and_times_the_deployed_file(tiny) -> None:  # type: ignore[no-untyped-def]
    reference = checked_reference(tiny)
    space = space_of(tiny, reference)
    x, _ = tiny.task.arrays("val")
    quant = next(k for k in space.knobs() if k.name == "method.quant")
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("static", "dynamic"):
            params = {**baseline_params(space, "int8"), quant.name: quant.param(method)}
            path = _built(tiny, space, params, Path(tmp) / method)
            here, there = onnx_outputs(path, x), onnx_outputs(path, x, runtime="openvino")
            # the same int8 file in both runtimes: the same predictions, close logits
            assert there.shape == here.shape
            assert (there.argmax(1) == here.argmax(1)).mean() >= 0.98
            assert np.abs(there - here).max() < 0.05 * np.abs(here).max()
        # measured in OpenVINO: the reference against itself is about 1
        m = measure_ratio(
            reference.onnx, reference.onnx, reference.feed, threads=1, rounds=9, runtime="openvino"
        )
        assert 0.5 < m.ratio < 2.0
        # every precision the space offers runs there, int4's MatMulNBits included
        fc = next(k for k in space.knobs() if k.name == "bits.fc")
        int4 = {**baseline_params(space, "teacher"), fc.name: fc.param(4)}
        path = _built(tiny, space, int4, Path(tmp) / "int4")
        here, there = onnx_outputs(path, x), onnx_outputs(path, x, runtime="openvino")
        assert (there.argmax(1) == here.argmax(1)).mean() >= 0.98


def test_the_measurement_goes_through_openvino(tiny, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from edgecompress.targets import openvino

    compiled, calls = openvino.compiled, []

    def counted(model, threads, shapes=None):  # type: ignore[no-untyped-def]
        calls.append((threads, shapes))
        return compiled(model, threads, shapes)

    monkeypatch.setattr(openvino, "compiled", counted)
    reference = checked_reference(tiny)
    measure_ratio(reference.onnx, reference.onnx, reference.feed, threads=1, rounds=7)
    assert calls == []  # ONNX Runtime's
    measure_ratio(
        reference.onnx, reference.onnx, reference.feed, threads=1, rounds=7, runtime="openvino"
    )
    # the candidate and the reference, on the target's one thread, at the feed's fixed shapes
    shapes = {name: a.shape for name, a in reference.feed.items()}
    assert calls == [(1, shapes), (1, shapes)]


def test_a_search_on_openvino_records_it_and_export_verifies_there(workdir, capsys) -> None:  # type: ignore[no-untyped-def]
    storage = ("--storage", "sqlite:///ov.db")
    code = main(
        ["search", TINY, "--runtime", "openvino", "--study", "ov", "--trials", "3"]
        + ["--speedup", "0.5", "--strategy", "tpe", "--no-progress", *storage]
    )
    assert code == 0, capsys.readouterr().err
    result = open_result("ov", "sqlite:///ov.db")
    assert result.meta.target["runtime"] == "openvino"
    assert result.meta.target["execution_provider"] == "CPU"
    done = result.trials.dropna(subset=["latency_ms"])
    assert len(done) == 3 and (done["latency_ms"] > 0).all()
    # another runtime is another study: resuming it on ONNX Runtime is refused, nothing run
    experiment = load_experiment(TINY)
    with pytest.raises(EdgeCompressError, match="cannot be resumed"):
        search(experiment, trials=4, study="ov", storage="sqlite:///ov.db", progress=False)
    # tables are ONNX Runtime's: asked for one, the search says so before any work
    with pytest.raises(EdgeCompressError, match="runs openvino: latency tables are measured"):
        search(
            experiment.with_runtime("openvino"),
            trials=4,
            study="ov",
            storage="sqlite:///ov.db",
            latency="table",
            progress=False,
        )
    # measured live here only: a device of another name would be recorded under its name
    elsewhere = replace(
        experiment.with_runtime("openvino"),
        target=replace(experiment.with_runtime("openvino").target, name="pi4"),
    )
    with pytest.raises(EdgeCompressError, match="measured live on this machine only"):
        search(elsewhere, trials=4, study="ov-pi", storage="sqlite:///ov.db", progress=False)
    assert len(open_result("ov", "sqlite:///ov.db").trials) == 3
    capsys.readouterr()
    # the .ort format is ONNX Runtime Mobile's: refused for an OpenVINO study, nothing written
    code = main(
        ["export", "--study", "ov", *storage, "--best", "-o", "o.onnx", "--format", "onnx,ort"]
    )
    assert code != 0 and "measured on openvino" in capsys.readouterr().err
    assert not (workdir / "o.onnx").exists()
    code = main(["export", "--study", "ov", *storage, "--best", "-o", "m.onnx"])
    out = capsys.readouterr().out
    assert code == 0 and "verified" in out
    manifest = json.loads((workdir / "m.onnx").with_suffix(".json").read_text())
    x, y = experiment.task.arrays("val")
    outputs = onnx_outputs(workdir / "m.onnx", x, runtime="openvino")
    assert float((outputs.argmax(1) == y).mean()) == pytest.approx(manifest["metrics"]["accuracy"])


def test_a_worker_measures_on_the_drivers_runtime(tiny, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Ray workers import the experiment file (ONNX Runtime there); the driver's target, its
    --runtime included, travels with each trial."""
    from edgecompress.search.trial import run_trial_by_ref
    from edgecompress.targets import openvino

    compiled, calls = openvino.compiled, []
    monkeypatch.setattr(openvino, "compiled", lambda *a: calls.append(1) or compiled(*a))
    outcome = run_trial_by_ref(
        TINY,
        {"finetune.epochs": 0},
        reference_ms=1.0,
        artifacts=str(tmp_path),
        artifact_id="from-a-worker",
        target=tiny.with_runtime("openvino").target.to_dict(),
    )
    assert outcome.metrics["latency_ms"] > 0 and len(calls) >= 3  # scored and timed there
    assert (tmp_path / "from-a-worker").stat().st_size > 0  # the worker stored its file
