"""A regression experiment for the tests: a 1-D CNN that reads a noisy signal's frequency and
phase (two real outputs), trained in seconds.

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

from edgecompress import Experiment, FinetuneSettings, RegressionTask, Target

LENGTH, OUTPUTS = 32, 2


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Signals sin(2 pi f t + p) in noise; the targets are f - 2.5 (in [-1.5, 1.5]) and p (in
    [-1, 1])."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, LENGTH)
    freq = rng.uniform(1.0, 4.0, n)
    phase = rng.uniform(-1.0, 1.0, n)
    x = np.sin(2 * np.pi * freq[:, None] * t + phase[:, None]) + 0.3 * rng.normal(size=(n, LENGTH))
    y = np.stack([freq - 2.5, phase], axis=1)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)


class SignalNet(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, width, 5, padding=2)
        self.bn1 = nn.BatchNorm1d(width)
        self.conv2 = nn.Conv1d(width, width, 5, padding=2)
        self.bn2 = nn.BatchNorm1d(width)
        self.relu = nn.ReLU()
        self.fc1 = nn.Linear(width * LENGTH, 32)
        self.fc2 = nn.Linear(32, OUTPUTS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.fc2(self.relu(self.fc1(x.flatten(1))))


def _loader(n: int, seed: int, shuffle: bool) -> DataLoader:
    return DataLoader(TensorDataset(*make_data(n, seed)), batch_size=32, shuffle=shuffle)


def trained_model() -> nn.Module:
    path = Path(os.environ.get("EDGECOMPRESS_CACHE", "/tmp")) / "signal-model.pt"
    with torch.random.fork_rng():  # the same teacher whichever test trains it first
        torch.manual_seed(0)
        model = SignalNet()
        if not path.exists():
            opt = torch.optim.Adam(model.parameters(), lr=3e-3)
            for _ in range(15):
                for x, y in _loader(600, 0, True):
                    opt.zero_grad()
                    nn.functional.mse_loss(model(x), y).backward()
                    opt.step()
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save(model.state_dict(), tmp)
            tmp.replace(path)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def build(name: str = "signal", **overrides: object) -> Experiment:
    settings = dict(
        name=name,
        model=trained_model,
        example_input=torch.zeros(1, LENGTH),
        task=RegressionTask(
            train=_loader(600, 0, True),
            val=_loader(300, 1, False),
            test=_loader(300, 2, False),
            finetune=FinetuneSettings(epochs=2),
            calibration_samples=64,
        ),
        target=Target(threads=1, batch_size=1),
    )
    settings.update(overrides)
    return Experiment(**settings)  # type: ignore[arg-type]


experiment = build()
