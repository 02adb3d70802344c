"""A short search on every model of the zoo, with every technique in one joint space: trials
complete, each exported model loads alone and reproduces its recorded accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from edgecompress import ClassificationTask, Experiment, FinetuneSettings, Target, export, search
from edgecompress.evaluators import onnx_accuracy, session
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
    )


@pytest.mark.parametrize("name", sorted(ZOO))
def test_joint_search_on_every_model(name: str, workdir: Path) -> None:
    experiment = _experiment(name)
    result = search(experiment, trials=4, speedup=0.5, storage="sqlite:///zoo.db", progress=False)
    assert len(result.trials) == 4 and result.failed == 0
    searched = [t for t in result.trials.itertuples() if not t.baseline]
    sections = {k.split(".")[0] for t in searched for k in t.plan}
    assert {"prune", "sparsity", "rank", "bits", "method"} <= sections
    number = int(searched[-1].trial)
    out = workdir / f"{name}.onnx"
    export(experiment, result, out, trial=number, remeasure=False)
    x, y = experiment.task.arrays("val")
    recorded = result.trials.set_index("trial").loc[number, "accuracy"]
    assert onnx_accuracy(out, x, y) == recorded
    logits = session(out).run(None, {"input": np.asarray(x[:3], np.float32)})[0]
    assert logits.shape == (3, 4)
