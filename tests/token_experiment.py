"""A model that takes integer token ids (an ``nn.Embedding`` first), for the tests.

Sequences of random tokens hide their class as one token somewhere; an embedding, a residual
feed-forward block and max pooling find it. Trained once per test session, deterministically
(``tests/weights.py``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edgecompress import ClassificationTask, Experiment, FinetuneSettings, Target
from tests.weights import trained_once

VOCAB, LENGTH, CLASSES = 50, 12, 3


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = rng.integers(CLASSES, VOCAB, (n, LENGTH))
    x[np.arange(n), rng.integers(0, LENGTH, n)] = y  # the class token, somewhere
    return torch.tensor(x, dtype=torch.int64), torch.tensor(y, dtype=torch.int64)


class TokenNet(nn.Module):
    def __init__(self, width: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        h = h + self.fc2(torch.relu(self.fc1(h)))
        return self.head(h.max(1).values)


def _loader(n: int, seed: int, shuffle: bool) -> DataLoader:
    return DataLoader(TensorDataset(*make_data(n, seed)), batch_size=32, shuffle=shuffle)


def _train(model: nn.Module) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = TensorDataset(*make_data(600, 0))
    order = torch.Generator().manual_seed(0)
    for _ in range(5):
        for x, y in DataLoader(data, batch_size=32, shuffle=True, generator=order):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()


def trained_model() -> nn.Module:
    return trained_once("tokens", TokenNet, _train)


experiment = Experiment(
    name="tokens",
    model=trained_model,
    example_input=torch.zeros(1, LENGTH, dtype=torch.int64),
    task=ClassificationTask(
        train=_loader(600, 0, True),
        val=_loader(200, 1, False),
        test=_loader(200, 2, False),
        finetune=FinetuneSettings(epochs=1),
    ),
    target=Target(name="local-cpu", threads=1, batch_size=1),
)
