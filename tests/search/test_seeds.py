"""The fixed first trials of a study: baselines and uniform seeds, as Optuna params."""

from __future__ import annotations

import optuna

from edgecompress.search.study import ensure_baselines
from edgecompress.spaces import AutoSpace
from edgecompress.tasks import FinetuneSettings


def _queued(tiny, **space: object) -> dict[str, dict]:  # type: ignore[no-untyped-def, type-arg]
    built = AutoSpace(**space).build(  # type: ignore[arg-type]
        tiny.model(), tiny.example_input, finetune=FinetuneSettings(epochs=1)
    )
    study = optuna.create_study(directions=["maximize", "minimize"])
    ensure_baselines(study, built)
    ensure_baselines(study, built)  # a resumed study enqueues nothing twice
    plans = {}
    for t in study.get_trials(states=(optuna.trial.TrialState.WAITING,)):
        trial = study.ask()
        plans[t.user_attrs["baseline"]] = dict(built.sample(trial))
        study.tell(trial, [0.0, 0.0])
    return plans


def test_baselines_and_uniform_seeds(tiny) -> None:  # type: ignore[no-untyped-def]
    plans = _queued(tiny)
    assert list(plans) == [
        "teacher",
        "int8",
        "uniform prune 0.45",
        "uniform prune 0.75",
        "uniform prune 0.95",
    ]
    teacher, seed = plans["teacher"], plans["uniform prune 0.75"]
    assert all(v == 0.0 for k, v in teacher.items() if k.startswith("prune."))
    assert all(v == 32 for k, v in teacher.items() if k.startswith("bits."))
    assert all(v == 1.0 for k, v in teacher.items() if k.startswith("rank."))
    assert {v for k, v in seed.items() if k.startswith("prune.")} == {0.75}
    assert {v for k, v in seed.items() if k.startswith("bits.")} == {8}
    assert {v for k, v in seed.items() if k.startswith("rank.")} == {1.0}
    assert seed["method.round_to"] == 1 and seed["method.prune_criterion"] == "l1"


def test_no_int8_baseline_without_precision_knobs_and_rank_seeds_without_pruning(tiny) -> None:  # type: ignore[no-untyped-def]
    plans = _queued(tiny, techniques=("rank",))
    assert list(plans) == ["teacher", "uniform rank 0.55", "uniform rank 0.3", "uniform rank 0.1"]
    assert plans["uniform rank 0.3"]["rank.conv2"] == 0.3


def test_student_seeds_without_pruning_or_low_rank(tiny) -> None:  # type: ignore[no-untyped-def]
    import torch

    from edgecompress.search.study import ensure_baselines as enqueue
    from edgecompress.tasks.mnist1d import Teacher

    model = Teacher(length=24, channels=8, hidden=16, classes=4)
    built = AutoSpace(techniques=("student", "bits")).build(
        model, torch.zeros(1, 24), finetune=FinetuneSettings(epochs=1)
    )
    study = optuna.create_study(directions=["maximize", "minimize"])
    enqueue(study, built)
    names = [t.user_attrs["baseline"] for t in study.trials]
    assert names == [
        "teacher",
        "int8",
        "uniform student 3",
        "uniform student 2",
        "uniform student 1",
    ]
    plans = {}
    for t in study.get_trials(states=(optuna.trial.TrialState.WAITING,)):
        trial = study.ask()
        plans[t.user_attrs["baseline"]] = dict(built.sample(trial))
        study.tell(trial, [0.0, 0.0])
    seed = plans["uniform student 1"]
    assert seed["student.depth.stage0"] == 1 and seed["student.width.stage0"] == 0.25
    assert {v for k, v in seed.items() if k.startswith("bits.")} == {8}
    assert plans["teacher"]["student.depth.stage0"] == 5
