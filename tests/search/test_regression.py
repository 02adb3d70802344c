"""A regression model searched end to end: its metric (named and directed) is the study's first
objective, chosen with --metric, kept on resume, shown by front and verified by export."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from edgecompress import (
    ClassificationTask,
    EdgeCompressError,
    RegressionTask,
    Result,
    load_experiment,
    open_result,
    search,
)
from edgecompress.cli import EXIT_BAD_INPUT, main
from edgecompress.evaluators import onnx_outputs
from edgecompress.search.front import columns
from edgecompress.search.plot import elements
from edgecompress.tasks import MAE, RMSE

from .test_front import study_meta  # type: ignore[import-not-found]

SIGNAL = f"{Path(__file__).parent.parent / 'regression_experiment.py'}:experiment"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_regression_study_optimises_the_metric_asked_and_export_verifies_it(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = "sqlite:///r.db"
    common = ("--storage", storage, "--no-progress", "--strategy", "tpe")
    code, out, err = _run(
        capsys, "search", SIGNAL, "--speedup", "0.8", "--trials", "4", "--metric", "mae", *common
    )
    assert code == 0, err
    header = out.splitlines()
    assert any(" mae " in f" {line} " and "test_mae" in line for line in header), out
    result = open_result("signal", storage)
    assert result.metric == "mae" and result.directions() == ["minimize", "minimize"]
    assert result.meta.metric == {"name": "mae", "direction": "minimize"}
    assert list(result.trials.columns[:4]) == ["trial", "mae", "mae_se", "test_mae"]
    trials = result.trials.set_index("baseline")
    teacher = float(trials.loc["teacher", "mae"])
    assert 0 < teacher < 0.3  # the teacher reads the signal (predicting 0 scores about 0.6)
    # every metric of the task is recorded for every trial, the study's only optimised
    study_trials = _study(storage).get_trials()
    for t in study_trials:
        if t.state.name == "COMPLETE":
            assert {"rmse", "mae", "mse", "r2", "test_rmse", "test_r2"} <= set(t.user_attrs)
            assert t.values[0] == pytest.approx(t.user_attrs["mae"])
    # resumed without --metric: the study keeps mae (an rmse experiment would be refused as a
    # changed objective); finished trials are not run again
    done = {t.number for t in study_trials if t.state.name == "COMPLETE"}
    resumed = search(
        load_experiment(SIGNAL), trials=4, storage=storage, progress=False, strategy="tpe"
    )
    assert resumed.metric == "mae" and set(resumed.trials["trial"]) == done
    with pytest.raises(EdgeCompressError, match=r"objectives: study has \['mae'"):
        search(  # another metric is another study: refused, nothing run
            load_experiment(SIGNAL), trials=7, storage=storage, progress=False, metric="rmse"
        )
    assert len(open_result("signal", storage).trials) == 4
    # exported: the manifest names the metric; the file's mae on val and test is the recorded one
    code, out, err = _run(
        capsys, "export", "--study", "signal", "--storage", storage, "--best", "-o", "m.onnx"
    )
    assert code == 0, err
    assert "mae" in out and "verified" in out
    manifest = json.loads((workdir / "m.onnx").with_suffix(".json").read_text())
    assert manifest["metric"] == "mae" and manifest["metric_direction"] == "minimize"
    best = resumed.best()
    assert best is not None and manifest["trial"] == int(best["trial"])
    assert best["mae"] == resumed.front()["mae"].min()  # lower is better
    experiment = load_experiment(SIGNAL)
    for split, key in (("val", "mae"), ("test", "test_mae")):
        x, y = experiment.task.arrays(split)
        outputs = onnx_outputs(workdir / "m.onnx", x)
        assert outputs.shape == (len(y), 2)
        assert float(np.abs(outputs - y).mean()) == pytest.approx(manifest["metrics"][key])


def _study(storage: str):  # type: ignore[no-untyped-def]
    import optuna

    return optuna.load_study(study_name="signal", storage=storage)


def test_metric_and_task_mistakes_are_refused_before_any_work(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(
        capsys, "search", SIGNAL, "--speedup", "0.8", "--trials", "2", "--metric", "accuracy"
    )
    assert code == EXIT_BAD_INPUT
    assert "metric 'accuracy'" in err and "rmse, mae, mse, r2" in err
    code, _, err = _run(
        capsys, "search", SIGNAL, "--speedup", "0.8", "--trials", "2", "--max-drop", "nan"
    )
    assert code == EXIT_BAD_INPUT and "--max-drop" in err and "rmse" in err
    assert not list(workdir.iterdir())  # nothing was created
    experiment = load_experiment(SIGNAL)
    with pytest.raises(ValueError, match="this task scores rmse, mae, mse, r2"):
        replace(experiment.task, metric="auc")
    with pytest.raises(EdgeCompressError, match="the first must be the task's metric 'rmse'"):
        replace(experiment, objectives=("accuracy", "latency_ms"))
    # a classification task on a regression model's data: its float targets are refused, by name
    task = experiment.task
    as_classes = ClassificationTask(train=task.train, val=task.val, test=task.test)
    assert replace(experiment, task=as_classes).study_objectives == ("accuracy", "latency_ms")
    with pytest.raises(EdgeCompressError, match="must be integer labels of shape"):
        replace(experiment, task=as_classes).validate()
    # targets that do not fit the outputs: the check says how many values each has
    bad = DataLoader(TensorDataset(torch.zeros(8, 32), torch.zeros(8, 3)), batch_size=4)
    with pytest.raises(EdgeCompressError, match="each sample has 3 target values but the model"):
        replace(experiment, task=replace(task, val=bad)).validate()


def test_classification_targets_are_checked_against_the_logits(tiny) -> None:  # type: ignore[no-untyped-def]
    floats = DataLoader(TensorDataset(torch.zeros(8, 24), torch.zeros(8)), batch_size=4)
    with pytest.raises(EdgeCompressError, match="integer labels of shape"):
        replace(tiny, task=replace(tiny.task, val=floats)).validate()
    wide = DataLoader(
        TensorDataset(torch.zeros(8, 24), torch.full((8,), 7, dtype=torch.int64)), batch_size=4
    )
    with pytest.raises(EdgeCompressError, match=r"labels must lie in \[0, 4\)"):
        replace(tiny, task=replace(tiny.task, val=wide)).validate()
    per_position = replace(tiny, model=lambda: torch.nn.Unflatten(1, (4, 6)))
    with pytest.raises(EdgeCompressError, match=r"logits of shape \(batch, classes\); it returned"):
        per_position.validate()  # (1, 4, 6): a segmentation model needs its own task


def test_regression_metrics_and_divergence() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=(500, 2)).astype(np.float32)
    out = y + rng.normal(scale=0.5, size=y.shape).astype(np.float32)
    scores = RegressionTask.evaluate(_task(), out, y)
    assert scores["rmse"] == pytest.approx(float(np.sqrt(((out - y) ** 2).mean())))
    assert scores["mae"] == pytest.approx(float(np.abs(out - y).mean()))
    assert scores["mse"] == pytest.approx(scores["rmse"] ** 2)
    assert scores["r2"] == pytest.approx(1 - ((out - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())
    assert 0 < scores["rmse_se"] < 0.05 and math.isnan(scores["r2_se"])
    cosines = (out * y).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(y, axis=1)
    assert scores["cosine"] == pytest.approx(float(cosines.mean()), rel=1e-6)
    assert scores["cosine_se"] == pytest.approx(cosines.std(ddof=1) / math.sqrt(500), rel=1e-5)
    assert RegressionTask.evaluate(_task(), 3 * y, y)["cosine"] == pytest.approx(1.0)
    assert RegressionTask.evaluate(_task(), -y, y)["cosine"] == pytest.approx(-1.0)
    assert RegressionTask.evaluate(_task(), 0 * y, y)["cosine"] == 0.0  # a zero output
    assert RMSE.within(0.11, 0.10, 0.02) and not RMSE.within(0.13, 0.10, 0.02)
    assert MAE.signed(0.3) == -0.3
    task = _task()
    assert task.divergence(y, y) == 0.0
    assert 0 < task.divergence(y, y + 0.1) < task.divergence(y, y + 0.5)
    assert task.divergence(y, np.full_like(y, np.nan)) == math.inf


def _task() -> RegressionTask:
    loader = DataLoader(TensorDataset(torch.zeros(4, 2), torch.zeros(4, 2)), batch_size=2)
    return RegressionTask(train=loader, val=loader)


def test_the_front_best_and_plot_follow_a_minimized_metric() -> None:
    rows = [  # (trial, rmse, latency): the teacher 0.10 at 2 ms
        (0, 0.10, 2.0, "teacher"),
        (1, 0.11, 0.8, ""),
        (2, 0.13, 0.4, ""),
        (3, 0.12, 0.9, ""),  # dominated by 1
        (4, 0.30, 0.2, ""),
    ]
    frame = pd.DataFrame(
        [
            {
                "trial": n,
                "rmse": v,
                "latency_ms": lat,
                "size_mb": 1.0,
                "feasible": lat <= 1.0,
                "violation_ms": max(0.0, lat - 1.0),
                "baseline": b,
                "proposed_by": "",
                "plan": {},
            }
            for n, v, lat, b in rows
        ],
        columns=columns("rmse"),
    )
    meta = {
        "budget_ms": 1.0,
        "objectives": ["rmse", "latency_ms"],
        "metric": {"name": "rmse", "direction": "minimize"},
        "reference_latency_ms": 2.0,
        "target": {"name": "local-cpu"},
        "device": {"cpu_model": "cpu"},
    }
    result = Result("s", study_meta(**meta), frame, failed=0, artifacts={})
    assert list(result.front()["trial"]) == [1, 2, 4]  # lowest error first
    assert int(result.best()["trial"]) == 1
    asked = Result("s", study_meta(**meta, max_drop=0.035), frame, failed=0, artifacts={})
    assert int(asked.best()["trial"]) == 2  # the fastest within 0.035 of the teacher's 0.10
    drawn = elements(asked)
    assert drawn.drop_line == pytest.approx(0.135)  # an error's line lies above the teacher's
    assert drawn.y_label == "validation rmse (lower is better)"
    assert drawn.front.value == (0.30, 0.13, 0.11)


def test_the_metric_leads_the_objectives_whatever_sizes_they_add() -> None:
    experiment = load_experiment(SIGNAL)
    assert experiment.study_objectives == ("rmse", "latency_ms")
    sized = replace(experiment, objectives=("latency_ms", "size_mb"))
    assert sized.study_objectives == ("rmse", "latency_ms", "size_mb")
    assert sized.with_metric("mae").study_objectives == ("mae", "latency_ms", "size_mb")
    named = replace(experiment, objectives=("rmse", "latency_ms", "size_gz_mb")).with_metric("r2")
    assert named.study_objectives == ("r2", "latency_ms", "size_gz_mb")
    assert named.directions() == ["maximize", "minimize", "minimize"]
    assert named.task.metric == "r2" and experiment.task.metric is None  # a copy, not a change
    with pytest.raises(EdgeCompressError, match="'latency_ms' and optionally size_mb"):
        replace(experiment, objectives=("size_mb",))
    either = replace(experiment, objectives=("size_mb", "latency_ms"))  # the costs in any order
    assert either.study_objectives == ("rmse", "size_mb", "latency_ms")


def test_a_regressor_with_one_value_per_sample_is_checked_and_scored() -> None:
    """A model that ends in ``squeeze(-1)``: outputs (batch,), targets (batch,)."""
    from edgecompress.compress.pipeline import check_finite

    x = torch.randn(64, 32)
    loader = DataLoader(TensorDataset(x, x.mean(1)), batch_size=16)
    task = RegressionTask(train=loader, val=loader)
    model = torch.nn.Sequential(torch.nn.Linear(32, 1), torch.nn.Flatten(0))
    check_finite(model, task)  # (64,) outputs: no IndexError
    outputs = model(x).detach()
    assert outputs.shape == (64,) and task.check_targets(outputs, x.mean(1)) is None
    scores = task.evaluate(outputs.numpy(), task.arrays("val")[1])
    assert scores["rmse"] == pytest.approx(float(((outputs - x.mean(1)) ** 2).mean().sqrt()))


def test_a_regression_space_searches_only_the_distillation_knobs_its_loss_reads() -> None:
    from edgecompress.search import space_report
    from tests.conftest import TINY

    regression = {k["name"]: k["kind"] for k in space_report(load_experiment(SIGNAL))[0]}
    assert regression["finetune.kd_weight"] == "float"
    assert regression["finetune.hint_weight"] == "ordinal"
    # the default distillation reads no temperature and no mode: fixed, not searched
    assert regression["finetune.temperature"] == regression["finetune.kd_mode"] == "fixed"
    classification = {k["name"]: k["kind"] for k in space_report(load_experiment(TINY))[0]}
    assert classification["finetune.temperature"] == "ordinal"
    assert classification["finetune.kd_mode"] == "choice"
