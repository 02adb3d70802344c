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
        "uniform prune 0.7",
        "uniform prune 0.9",
    ]
    teacher, seed = plans["teacher"], plans["uniform prune 0.7"]
    assert all(v == 0.0 for k, v in teacher.items() if k.startswith("prune."))
    assert all(v == 32 for k, v in teacher.items() if k.startswith("bits."))
    assert all(v == 1.0 for k, v in teacher.items() if k.startswith("rank."))
    assert {v for k, v in seed.items() if k.startswith("prune.")} == {0.7}
    assert {v for k, v in seed.items() if k.startswith("bits.")} == {8}
    assert {v for k, v in seed.items() if k.startswith("rank.")} == {1.0}
    assert seed["method.round_to"] == 1 and seed["method.prune_criterion"] == "l1"


def test_no_int8_baseline_without_precision_knobs_and_rank_seeds_without_pruning(tiny) -> None:  # type: ignore[no-untyped-def]
    plans = _queued(tiny, techniques=("rank",))
    assert list(plans) == ["teacher", "uniform rank 0.55", "uniform rank 0.3", "uniform rank 0.1"]
    assert plans["uniform rank 0.3"]["rank.conv2"] == 0.3
