"""A tiny experiment for the tests: synthetic 1D sequences, a small CNN trained in a second.

The trained weights are cached in $EDGECOMPRESS_CACHE so that Ray workers, which import this
file themselves, load exactly the driver's model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edgecompress import ClassificationTask, Experiment, FinetuneSettings, Target

LENGTH, CLASSES = 24, 4


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, LENGTH)
    y = rng.integers(0, CLASSES, n)
    freq = 1.0 + y[:, None]
    x = np.sin(2 * np.pi * freq * t + rng.uniform(0, 0.5, (n, 1))) + 1.2 * rng.normal(
        size=(n, LENGTH)
    )
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


class TinyNet(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, width, 3, padding=1)
        self.bn1 = nn.BatchNorm1d(width)
        self.conv2 = nn.Conv1d(width, width, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(width * LENGTH, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        x = self.relu(self.conv2(x))
        return self.fc(x.flatten(1))


def _loader(n: int, seed: int, shuffle: bool) -> DataLoader:
    return DataLoader(TensorDataset(*make_data(n, seed)), batch_size=32, shuffle=shuffle)


def trained_model() -> nn.Module:
    path = Path(os.environ.get("EDGECOMPRESS_CACHE", "/tmp")) / "tiny-model.pt"
    # its own random state: the same teacher whichever test trains it first, and the tests'
    # random state is left as it was
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TinyNet()
        if not path.exists():
            opt = torch.optim.Adam(model.parameters(), lr=1e-2)
            for _ in range(8):
                for x, y in _loader(400, 0, True):
                    opt.zero_grad()
                    nn.functional.cross_entropy(model(x), y).backward()
                    opt.step()
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save(model.state_dict(), tmp)
            tmp.replace(path)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def build(name: str = "tiny", **overrides: object) -> Experiment:
    settings = dict(
        name=name,
        model=trained_model,
        example_input=torch.zeros(1, LENGTH),
        task=ClassificationTask(
            train=_loader(400, 0, True),
            val=_loader(200, 1, False),
            test=_loader(200, 2, False),
            finetune=FinetuneSettings(epochs=1),
            calibration_samples=64,
        ),
        target=Target(threads=1, batch_size=1),
    )
    settings.update(overrides)
    return Experiment(**settings)  # type: ignore[arg-type]


experiment = build()
