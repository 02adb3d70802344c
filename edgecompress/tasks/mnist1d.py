"""The built-in example: MNIST-1D, generated locally, and a wide 1D CNN teacher.

The teacher is trained on first use and cached.

MNIST-1D (Greydanus, 2020) in the paper's standard setting, the ``mnist1d`` package defaults:
4,000 training and 1,000 test sequences of length 40. The validation split the search selects
on is 2,000 more sequences generated the same way from another seed (the standard error of an
accuracy near 0.98 on it is about 0.3 points, well below the 1-point drop users ask about); the
test split is only reported.
Data and teacher weights are cached (``$EDGECOMPRESS_CACHE``, default ``~/.cache/edgecompress``)
as ``.npz`` and a ``state_dict`` (no pickles).
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edgecompress.tasks.classification import ClassificationTask, FinetuneSettings

VAL_SIZE = 2000
DATA_VERSION = 2  # v2: a 2,000-sequence validation split of its own (v1: 500 held out)


def cache_dir() -> Path:
    path = Path(os.environ.get("EDGECOMPRESS_CACHE", Path.home() / ".cache" / "edgecompress"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Serializes first-use work (data, teacher) across processes that share the cache."""
    with open(path.with_suffix(path.suffix + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def load_data() -> dict[str, np.ndarray]:
    """``x_train, y_train, x_val, y_val, x_test, y_test`` (float32 inputs, int64 labels)."""
    path = cache_dir() / f"mnist1d-v{DATA_VERSION}.npz"
    with _exclusive(path):
        if not path.exists():
            from mnist1d.data import get_dataset_args, make_dataset

            args = get_dataset_args()
            d = make_dataset(args)  # generated from templates, never downloaded
            extra = get_dataset_args()
            extra.seed, extra.num_samples, extra.train_split = args.seed + 1, VAL_SIZE, 1.0
            v = make_dataset(extra)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(
                tmp,
                x_train=d["x"],
                y_train=d["y"],
                x_val=v["x"][:VAL_SIZE],
                y_val=v["y"][:VAL_SIZE],
                x_test=d["x_test"],
                y_test=d["y_test"],
            )
            tmp.replace(path)
    with np.load(path) as z:
        return {k: z[k].astype(np.float32 if k.startswith("x") else np.int64) for k in z.files}


class Teacher(nn.Module):
    """A wide 1D CNN: six conv-BN-ReLU blocks at full length, flatten, two linear layers.

    256 channels make it slow enough (about 2 ms at batch 1 on one thread here) that even 50x
    compression stays above ONNX Runtime's per-call overhead, and wide enough that structured
    pruning has room.
    """

    def __init__(
        self,
        *,
        length: int = 40,
        channels: int = 256,
        blocks: int = 6,
        hidden: int = 512,
        dropout: float = 0.2,
        classes: int = 10,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(blocks):
            layers += [
                nn.Conv1d(1 if i == 0 else channels, channels, 5, padding=2, bias=False),
                nn.BatchNorm1d(channels),
                nn.ReLU(),
            ]
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(channels * length, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x.unsqueeze(1))))


class MLP(nn.Module):
    """A Linear-heavy teacher: four hidden layers of ``hidden`` units (int4 and dynamic int8
    act on exactly such MatMuls)."""

    def __init__(
        self, *, length: int = 40, hidden: int = 1024, layers: int = 4, classes: int = 10
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks += [nn.Linear(length if i == 0 else hidden, hidden), nn.ReLU()]
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


RECIPE = {
    "epochs": 15,
    "lr": 3e-3,
    "batch_size": 128,
    "weight_decay": 1e-2,
    "shift": 3,
    "noise": 0.05,
    "seed": 0,
}


def _augment(x: torch.Tensor, gen: torch.Generator, shift: int, noise: float) -> torch.Tensor:
    """A random circular shift of up to ``shift`` steps per sequence, plus Gaussian noise."""
    n, length = x.shape
    shifts = torch.randint(-shift, shift + 1, (n,), generator=gen)
    idx = (torch.arange(length).unsqueeze(0) - shifts.unsqueeze(1)) % length
    return torch.gather(x, 1, idx) + noise * torch.randn(x.shape, generator=gen)


def train_teacher(model: nn.Module, data: dict[str, np.ndarray], recipe: dict) -> nn.Module:
    """AdamW with a one-cycle schedule; keeps the epoch with the best validation accuracy."""
    torch.manual_seed(recipe["seed"])
    gen = torch.Generator().manual_seed(recipe["seed"])
    x, y = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"])
    bs = recipe["batch_size"]
    opt = torch.optim.AdamW(
        model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"]
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=recipe["lr"],
        epochs=recipe["epochs"],
        steps_per_epoch=-(-len(x) // bs),
        pct_start=0.2,
    )
    best, best_state = -1.0, None
    for _ in range(recipe["epochs"]):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), bs):
            idx = order[start : start + bs]
            xb = _augment(x[idx], gen, recipe["shift"], recipe["noise"])
            loss = nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        val = accuracy(model, data["x_val"], data["y_val"])
        if val >= best:
            best, best_state = val, copy.deepcopy(model.state_dict())
    assert best_state is not None
    model.load_state_dict(best_state)
    return model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        pred = model.eval()(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())


def teacher() -> nn.Module:
    """The trained teacher; trained on first use (a few minutes) and cached."""
    return trained(Teacher(), "teacher")


def mlp_teacher() -> nn.Module:
    """A Linear-heavy teacher (an MLP) on the same data; trained on first use and cached."""
    return trained(MLP(), "mlp")


def trained(model: nn.Module, kind: str) -> nn.Module:
    """``model`` trained on MNIST-1D with ``RECIPE`` on first use, cached by its architecture
    (``kind`` names the cache file), then loaded."""
    config = {**RECIPE, "arch": repr(model), "data": DATA_VERSION}
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    path = cache_dir() / f"mnist1d-{kind}-{key.hexdigest()[:12]}.pt"
    with _exclusive(path):
        if not path.exists():
            data = load_data()
            start = time.perf_counter()
            print(
                f"edgecompress: training the MNIST-1D {kind} once (cached at {path}) ...",
                flush=True,
            )
            train_teacher(model, data, RECIPE)
            print(
                f"edgecompress: {kind} trained in {time.perf_counter() - start:.0f} s: "
                f"val {accuracy(model, data['x_val'], data['y_val']):.4f}, "
                f"test {accuracy(model, data['x_test'], data['y_test']):.4f}",
                flush=True,
            )
            torch.save(model.state_dict(), path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def task(finetune: FinetuneSettings | None = None, batch_size: int = 64) -> ClassificationTask:
    d = load_data()

    def loader(split: str, shuffle: bool) -> DataLoader:
        ds = TensorDataset(torch.from_numpy(d[f"x_{split}"]), torch.from_numpy(d[f"y_{split}"]))
        return DataLoader(ds, batch_size=batch_size if shuffle else 256, shuffle=shuffle)

    return ClassificationTask(
        train=loader("train", True),
        val=loader("val", False),
        test=loader("test", False),
        finetune=finetune or FinetuneSettings(),
    )
