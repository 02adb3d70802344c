"""Models with several inputs, for the tests (issue 14): trained once per test session,
deterministically (``tests/weights.py``).

- ``masked``: keyword inputs as a tokenizer gives them, ``{"input_ids", "attention_mask",
  "token_type_ids"}``. A sequence's class is one token among random ones; the padding past its
  length holds tokens that look like classes too, so only a model that reads the mask is right.
  The model ignores ``token_type_ids`` (the exporter leaves it out of the graph).
- ``pair``: positional inputs, a 1-D signal and a metadata vector (``forward(signal, meta)``);
  the class is the signal's bump position, shifted by a flag in the metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgecompress import ClassificationTask, Experiment, FinetuneSettings, Target
from tests.weights import trained_once

VOCAB, LENGTH, CLASSES = 40, 12, 3
SIGNAL, META = 24, 4


def masked_data(n: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    ids = rng.integers(CLASSES, VOCAB, (n, LENGTH))
    length = rng.integers(4, LENGTH - 2, n)
    ids[np.arange(n), rng.integers(0, length)] = y  # the class token, inside the sequence
    mask = (np.arange(LENGTH)[None, :] < length[:, None]).astype(np.int64)
    pad = rng.integers(0, CLASSES, (n, LENGTH))  # padding that looks like class tokens
    ids = np.where(mask == 1, ids, pad)
    x = {
        "input_ids": torch.tensor(ids, dtype=torch.int64),
        "attention_mask": torch.tensor(mask, dtype=torch.int64),
        "token_type_ids": torch.zeros(n, LENGTH, dtype=torch.int64),
    }
    return x, torch.tensor(y, dtype=torch.int64)


class MaskedNet(nn.Module):
    def __init__(self, width: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.head = nn.Linear(width, CLASSES)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = self.embed(input_ids)
        h = h + self.fc2(torch.relu(self.fc1(h)))
        h = h - (1 - attention_mask.unsqueeze(-1).to(h.dtype)) * 1e4  # padding never wins
        return self.head(h.max(1).values)


def pair_data(n: int, seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    flag = rng.integers(0, 2, n)
    bump = (y + flag) % CLASSES  # where the bump is, shifted by the flag
    t = np.arange(SIGNAL)
    centre = 4 + bump * 8
    signal = np.exp(-((t[None, :] - centre[:, None]) ** 2) / 4.0) + 0.2 * rng.standard_normal(
        (n, SIGNAL)
    )
    meta = rng.standard_normal((n, META)) * 0.1
    meta[:, 0] = flag
    x = (
        torch.tensor(signal[:, None, :], dtype=torch.float32),
        torch.tensor(meta, dtype=torch.float32),
    )
    return x, torch.tensor(y, dtype=torch.int64)


class PairNet(nn.Module):
    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, padding=2)
        self.conv2 = nn.Conv1d(channels, channels, 5, padding=2)
        self.meta = nn.Linear(META, 16)
        self.fc = nn.Linear(channels + 16, 32)
        self.head = nn.Linear(32, CLASSES)

    def forward(self, signal: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(signal))))
        h = h.amax(-1)  # (a pooled-then-flattened branch next to meta is grouped wrongly by
        # torch-pruning: the search refuses it, naming the knob, until the layer is excluded)
        h = torch.cat([h, torch.relu(self.meta(meta))], dim=1)
        return self.head(torch.relu(self.fc(h)))


class Rows(Dataset):
    """Sample ``i`` of inputs given as a dict or a tuple of tensors, with its label."""

    def __init__(self, x: object, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[object, torch.Tensor]:
        if isinstance(self.x, dict):
            return {k: v[i] for k, v in self.x.items()}, self.y[i]
        assert isinstance(self.x, tuple)
        return tuple(v[i] for v in self.x), self.y[i]


def _fit(data: Dataset, epochs: int) -> Callable[[nn.Module], None]:
    from edgecompress.inputs import call

    def train(model: nn.Module) -> None:
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        order = torch.Generator().manual_seed(0)
        for _ in range(epochs):
            for x, y in DataLoader(data, batch_size=32, shuffle=True, generator=order):
                opt.zero_grad()
                nn.functional.cross_entropy(call(model, x), y).backward()
                opt.step()

    return train


def masked_model() -> nn.Module:
    return trained_once("masked", MaskedNet, _fit(Rows(*masked_data(800, 0)), 6))


def pair_model() -> nn.Module:
    return trained_once("pair", PairNet, _fit(Rows(*pair_data(800, 0)), 6))


def _experiment(name: str, model: Callable[[], nn.Module], make: Callable[..., Any]) -> Experiment:
    """Training, validation and test splits of ``make``'s data; its first sample, the example."""

    def loader(n: int, seed: int, shuffle: bool = False) -> DataLoader:
        return DataLoader(Rows(*make(n, seed)), batch_size=32, shuffle=shuffle)

    x, _ = make(1, 9)
    example = {k: v[:1] for k, v in x.items()} if isinstance(x, dict) else tuple(v[:1] for v in x)
    return Experiment(
        name=name,
        model=model,
        example_input=example,
        task=ClassificationTask(
            train=loader(600, 0, True),
            val=loader(200, 1),
            test=loader(200, 2),
            finetune=FinetuneSettings(epochs=1),
        ),
        target=Target(name="local-cpu", threads=1, batch_size=1),
    )


masked = _experiment("masked", masked_model, masked_data)
pair = _experiment("pair", pair_model, pair_data)
