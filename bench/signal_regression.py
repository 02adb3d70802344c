"""A regression model the search was never tuned on, for bench/search_vs_hand.py.

Task: read three quantities off a noisy 1-D signal of 64 steps: the frequency of a sinusoid
(1-8 cycles), its amplitude (0.5-1.5) and the slope of a linear trend under it, in Gaussian
noise (standard deviation 0.3), each target scaled to about unit spread. Data is generated
here (6000 training, 2000 validation, 2000 test signals, fixed seeds).

Model: a 1-D CNN of five conv-BN-ReLU blocks (32, 64, 96, 128 and 96 channels; kernels 7, 5, 5,
3, 3), a max-pool halving the length after the second block, global average pooling and a
linear head of 3 outputs. Trained once (AdamW, one-cycle, 30 epochs; about a minute on 2
cores), keeping the epoch with the lowest validation RMSE, and cached in
``$EDGECOMPRESS_CACHE``. The study minimises the validation RMSE (``RegressionTask``); Ray
workers import this file by path (``bench/signal_regression.py:experiment``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edgecompress import Experiment, FinetuneSettings, RegressionTask, Target
from edgecompress.tasks.mnist1d import _exclusive, cache_dir

LENGTH = 64
WIDTHS = (32, 64, 96, 128, 96)
KERNELS = (7, 5, 5, 3, 3)
SIZES = {"train": (6000, 0), "val": (2000, 1), "test": (2000, 2)}
RECIPE = {"epochs": 30, "lr": 3e-3, "batch_size": 128, "weight_decay": 1e-2, "seed": 0}


def make_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Signals (n, 64) and targets (n, 3): (frequency - 4.5) / 2, amplitude - 1, 2 x slope."""
    n, seed = SIZES[split]
    rng = np.random.default_rng(1000 + seed)
    t = np.linspace(0.0, 1.0, LENGTH)
    freq = rng.uniform(1.0, 8.0, n)
    amp = rng.uniform(0.5, 1.5, n)
    slope = rng.uniform(-0.5, 0.5, n)
    phase = rng.uniform(0.0, 2 * np.pi, n)
    x = amp[:, None] * np.sin(2 * np.pi * freq[:, None] * t + phase[:, None])
    x = x + slope[:, None] * (t - 0.5) * 4 + 0.3 * rng.normal(size=(n, LENGTH))
    y = np.stack([(freq - 4.5) / 2.0, amp - 1.0, 2.0 * slope], axis=1)
    return x.astype(np.float32), y.astype(np.float32)


class SignalCNN(nn.Module):
    def __init__(self, outputs: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = 1
        for i, (width, kernel) in enumerate(zip(WIDTHS, KERNELS, strict=True)):
            layers += [
                nn.Conv1d(previous, width, kernel, padding=kernel // 2, bias=False),
                nn.BatchNorm1d(width),
                nn.ReLU(),
            ]
            if i == 1:
                layers.append(nn.MaxPool1d(2))
            previous = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(previous, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x.unsqueeze(1))).flatten(1))


def _rmse(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(x)).numpy()
    return float(np.sqrt(((out - y) ** 2).mean()))


def teacher() -> nn.Module:
    """The trained model; trained on first use and cached (keyed by architecture and recipe)."""
    model = SignalCNN()
    config = {**RECIPE, "arch": repr(model), "sizes": SIZES}
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / f"signal-regression-{key}.pt"
    with _exclusive(path):
        if not path.exists():
            start = time.perf_counter()
            _train(model)
            x, y = make_split("val")
            print(
                f"signal regression teacher trained in {time.perf_counter() - start:.0f} s: "
                f"val RMSE {_rmse(model, x, y):.4f}",
                flush=True,
            )
            torch.save(model.state_dict(), path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def _train(model: nn.Module) -> None:
    torch.manual_seed(RECIPE["seed"])
    gen = torch.Generator().manual_seed(RECIPE["seed"])
    x, y = (torch.from_numpy(a) for a in make_split("train"))
    xv, yv = make_split("val")
    bs, epochs = RECIPE["batch_size"], RECIPE["epochs"]
    opt = torch.optim.AdamW(
        model.parameters(), lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"]
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=RECIPE["lr"], epochs=epochs, steps_per_epoch=-(-len(x) // bs), pct_start=0.2
    )
    best, best_state = float("inf"), None
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), bs):
            idx = order[start : start + bs]
            loss = nn.functional.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        val = _rmse(model, xv, yv)
        if val <= best:
            best, best_state = val, copy.deepcopy(model.state_dict())
    assert best_state is not None
    model.load_state_dict(best_state)


def _loader(split: str, shuffle: bool) -> DataLoader:
    x, y = make_split(split)
    data = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    return DataLoader(data, batch_size=64 if shuffle else 256, shuffle=shuffle)


experiment = Experiment(
    name="signal-regression",
    model=teacher,
    example_input=torch.zeros(1, LENGTH),
    task=RegressionTask(
        train=_loader("train", True),
        val=_loader("val", False),
        test=_loader("test", False),
        finetune=FinetuneSettings(epochs=8, kd_weight=0.7),
    ),
    target=Target(name="local-cpu", threads=1, batch_size=1),
)
