"""A short search on every model of the zoo, with every technique in one joint space: trials
complete, each exported model loads alone and reproduces its recorded accuracy."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from edgecompress import (
    ClassificationTask,
    Experiment,
    FinetuneSettings,
    Target,
    export,
    search,
)
from edgecompress.evaluators import onnx_accuracy, session
from edgecompress.spaces import AutoSpace
from tests.models import EXAMPLE_INPUTS, ZOO


def _experiment(name: str) -> Experiment:
    """The zoo model (randomly initialized) is the teacher; labels are its own predictions on
    random inputs, so the teacher is exact and compression can only lose accuracy."""
    teacher = ZOO[name]()
    shape = EXAMPLE_INPUTS[name].shape[1:]
    g = torch.Generator().manual_seed(1)

    def loader(n: int, shuffle: bool) -> DataLoader:
        x = torch.randn(n, *shape, generator=g)
        with torch.no_grad():
            y = teacher(x).argmax(1)
        return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=shuffle)

    task = ClassificationTask(
        train=loader(128, True),
        val=loader(64, False),
        test=loader(64, False),
        finetune=FinetuneSettings(epochs=1),
        calibration_samples=32,
    )
    return Experiment(
        name=name.replace("_", "-"),
        model=ZOO[name],
        example_input=EXAMPLE_INPUTS[name][:1],
        task=task,
        target=Target(threads=1, batch_size=1),
        objectives=("accuracy", "latency_ms", "size_gz_mb"),  # so sparsity is searched too
    )


# the plain CNN and the MLP are searched by every other search test (the tiny experiment, the
# README's example); these are the structures only the zoo has (about 35 s a model)
@pytest.mark.parametrize("name", sorted(set(ZOO) - {"plain_cnn", "mlp"}))
def test_joint_search_on_the_zoos_structures(name: str, workdir: Path) -> None:
    experiment = _experiment(name)
    result = search(
        experiment,
        trials=7,
        speedup=0.5,
        storage="sqlite:///zoo.db",
        progress=False,
        strategy="tpe",
    )
    assert len(result.trials) == 7 and result.failed == 0  # 2 baselines, 3 seeds, 2 sampled
    searched = [t for t in result.trials.itertuples() if not t.baseline]
    # the sampled plans really applied the techniques (recorded in each trial's notes)
    study = optuna.load_study(study_name=experiment.name, storage="sqlite:///zoo.db")
    notes = [study.trials[int(t.trial)].user_attrs["notes"] for t in searched]
    assert all(n["finetuned_epochs"] == 1 for n in notes)
    assert any(any(r is not None for r in n.get("ranks", {}).values()) for n in notes)
    assert any(n.get("weight_sparsity") for n in notes)
    number = int(searched[-1].trial)
    out = workdir / f"{name}.onnx"
    export(experiment, result, out, trial=number, remeasure=False)
    x, y = experiment.task.arrays("val")
    recorded = result.trials.set_index("trial").loc[number, "accuracy"]
    assert onnx_accuracy(out, x, y) == recorded
    logits = session(out).run(None, {"input": np.asarray(x[:3], np.float32)})[0]
    assert logits.shape == (3, 4)


# the structure an allocation is likeliest to break on: attention with residual additions (a
# profile and its measured allocations cost about 2 minutes a model here in the full space; the
# residual CNN and the others run the tpe search above)
def test_allocation_strategy_on_attention_with_residuals(workdir: Path) -> None:
    """The default strategy profiles a transformer (attention, residual additions) and
    proposes plans measured within the budget before training."""
    # pruning alone, channels unrounded: the profile's cost is its measurements (a base per
    # precision and alignment, a ladder per group, a plan per layer and precision)
    space = AutoSpace(techniques=("prune",), round_to=(1,))
    experiment = replace(_experiment("transformer"), space=space)
    result = search(experiment, trials=4, speedup=0.8, storage="sqlite:///alloc.db", progress=False)
    assert len(result.trials) == 4 and result.failed == 0
    study = optuna.load_study(study_name=experiment.name, storage="sqlite:///alloc.db")
    proposed = [t for t in study.trials if "allocation" in t.user_attrs]
    assert proposed, "nothing was allocated"
    for t in proposed:
        record = t.user_attrs["allocation"]
        assert record["untrained_latency_ms"] <= record["target_ms"] <= result.budget_ms
