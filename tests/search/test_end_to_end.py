"""End to end on the tiny model: search, front, export; the export stands alone."""

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import edgecompress
from edgecompress import EdgeCompressError, export, open_result, search
from edgecompress.evaluators import onnx_accuracy, session
from edgecompress.export import provenance


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        next(iter(model.parameters())).view(-1)[0] += 1e-3
    return model


def test_search_front_export(tiny, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    result = search(
        tiny, trials=4, speedup=0.5, storage="sqlite:///e2e.db", progress=False, strategy="tpe"
    )
    assert len(result.trials) == 4
    baselines = set(result.trials["baseline"]) - {""}
    # the two baselines, then the TPE strategy's uniform seeds: one pruning ratio for every
    # group, in int8 (the allocation strategy's start is tested in test_strategies)
    assert baselines == {"teacher", "int8", "uniform prune 0.45", "uniform prune 0.75"}
    seed = result.trials.set_index("baseline").loc["uniform prune 0.75", "plan"]
    assert {v for k, v in seed.items() if k.startswith("prune.")} == {0.75}
    assert {v for k, v in seed.items() if k.startswith("bits.")} == {8}
    teacher = result.trials.set_index("baseline").loc["teacher"]
    # the uncompressed teacher's plan is the identity, and it is ~1x the reference
    assert all(v == 0.0 for k, v in teacher["plan"].items() if k.startswith("prune."))
    assert 0.5 < teacher["latency_ms"] / result.meta.reference_latency_ms < 2.0
    assert result.budget_ms == result.meta.reference_latency_ms / 0.5

    front = result.front()
    assert result.has_feasible  # the budget is twice the teacher's latency
    assert list(front["accuracy"]) == sorted(front["accuracy"], reverse=True)
    assert front["feasible"].all()
    # nothing on the front is dominated by another feasible trial
    ok = result.trials[result.trials["feasible"]]
    for _, row in front.iterrows():
        better = ok[
            (ok["accuracy"] >= row["accuracy"])
            & (ok["latency_ms"] <= row["latency_ms"])
            & ((ok["accuracy"] > row["accuracy"]) | (ok["latency_ms"] < row["latency_ms"]))
        ]
        assert better.empty

    # export a given trial and check it alone, in an empty folder
    number = int(result.trials["trial"].iloc[-1])
    out = workdir / "out" / "t.onnx"
    manifest = export(tiny, open_result("tiny", "sqlite:///e2e.db"), out, trial=number)
    alone = workdir / "alone"
    alone.mkdir()
    shutil.copy(out, alone / "model.onnx")
    out.unlink()
    recorded = result.trials.set_index("trial").loc[number]
    x, y = tiny.task.arrays("val")
    assert onnx_accuracy(alone / "model.onnx", x, y) == recorded["accuracy"]
    xt, yt = tiny.task.arrays("test")
    assert onnx_accuracy(alone / "model.onnx", xt, yt) == recorded["test_accuracy"]
    logits = session(alone / "model.onnx").run(None, {"input": np.zeros((2, 24), np.float32)})[0]
    assert logits.shape == (2, 4)

    saved = json.loads((workdir / "out" / "t.json").read_text())
    assert saved == manifest
    assert saved["trial"] == number and saved["plan"] == recorded["plan"]
    assert saved["metrics"]["accuracy"] == recorded["accuracy"]
    assert saved["metrics"]["latency_ms_remeasured"] > 0
    assert saved["metrics"]["speedup"] == pytest.approx(
        result.meta.reference_latency_ms / recorded["latency_ms"]
    )
    # the study measured with the suite's fewer rounds (conftest.py), and says so
    from edgecompress.evaluators.latency import effort

    assert result.meta.measure_effort == saved["measure_effort"] == effort() < 1
    assert saved["target"]["threads"] == 1 and "cpu_model" in saved["target"]["searched_on"]
    assert isinstance(saved["target"]["searched_on"]["isa_flags"], list)
    assert set(saved["versions"]) >= {"torch", "onnxruntime", "optuna", "edgecompress"}
    # the file's own input and output names, and what reproduces it
    assert (saved["input"], saved["inputs"]) == ("input", ["input"])
    assert saved["outputs"] == [saved["output"]]
    assert session(alone / "model.onnx").get_outputs()[0].name == saved["output"]
    again = saved["reproduce"]
    assert again["experiment"] == tiny.ref and again["seed"] == tiny.seed
    file = Path(tiny.ref.rsplit(":", 1)[0])
    assert again["experiment_file_sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert again["finetune_seed"].startswith(f"{tiny.seed + number} ")
    assert again["edgecompress"]["version"] == edgecompress.__version__
    assert "revision" in again["edgecompress"]
    x, y = tiny.task.arrays("val")
    assert again["data_sha256"]["val"] == hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
    assert again["data_sha256"]["train"] != again["data_sha256"]["val"]
    weights = provenance(tiny, number)["teacher_sha256"]
    assert again["teacher_sha256"] == weights  # the same teacher, hashed the same way again
    other = replace(tiny, model=lambda: _perturbed(tiny.model()))
    assert provenance(other, number)["teacher_sha256"] != weights

    # no trial is left RUNNING, and the study holds exactly what the result shows
    study = optuna.load_study(study_name="tiny", storage="sqlite:///e2e.db")
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4
    # the last uniform seed waits in the queue for the next run of the study
    assert states.count(optuna.trial.TrialState.WAITING) == 1
    # the budget is an Optuna constraint on every trial: latency - budget (<= 0 is feasible),
    # by name, and where optuna-dashboard reads it (its own serializer), with the metric names
    from optuna_dashboard._serializer import serialize_frozen_trial

    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        slack = t.user_attrs["latency_ms"] - result.budget_ms
        assert t.constraints["latency_budget"] == pytest.approx(slack)
        shown = serialize_frozen_trial(study._study_id, t, {})
        assert shown["constraints"] == [pytest.approx(slack)]
    assert study.metric_names == ["accuracy", "latency_ms"]


def test_export_refuses_a_model_that_does_not_reproduce(tiny, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    search(
        tiny, trials=2, speedup=0.5, storage="sqlite:///tamper.db", progress=False, strategy="tpe"
    )
    result = open_result("tiny", "sqlite:///tamper.db")
    # the data changed since the search: other validation samples
    g = torch.Generator().manual_seed(5)
    val = DataLoader(
        TensorDataset(torch.randn(200, 24, generator=g), torch.randint(0, 4, (200,), generator=g)),
        batch_size=64,
    )
    changed = replace(tiny, task=replace(tiny.task, val=val))
    number = int(result.trials["trial"].iloc[0])
    with pytest.raises(EdgeCompressError, match="val accuracy is .* but the study recorded"):
        export(changed, result, "out/t.onnx", trial=number)
    assert not (workdir / "out").exists()  # nothing was written
