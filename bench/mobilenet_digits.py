"""A 2-D vision model for bench/search_vs_hand.py: a MobileNetV2-style network on scikit-learn's
handwritten digits, upsampled to 32x32.

Inverted residual blocks (1x1 expansion, 3x3 depthwise, 1x1 projection, ReLU6, a residual add
where shapes allow), strides down to 4x4, a 1x1 head and global average pooling: the structure
of the 2-D networks users bring, at a size whose latency (a few ms at batch 1 on one thread)
stays well above ONNX Runtime's per-call overhead. Never tuned on by any part of the search.

Data: the 1,797 8x8 digits that scikit-learn ships (nothing downloaded), split once by a fixed
permutation into 1,097 training, 400 validation and 300 test images, bilinearly upsampled to
32x32, scaled to [0, 1], each shifted by up to 3 pixels and given Gaussian noise (``NOISE``)
once, with a fixed seed: clean digits are too easy (the teacher scored 100% on validation,
leaving no accuracy for compression to lose). The training split is augmented again (shifts
and noise) when the teacher is trained. The validation split is small: the standard error of an
accuracy near 0.95 on it is about 1 point; the bench reports test accuracy beside it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edgecompress import Experiment, FinetuneSettings, Target
from edgecompress.tasks.classification import ClassificationTask
from edgecompress.tasks.mnist1d import _exclusive, cache_dir

SIZE = 32
NOISE = 0.5
SPLITS = (1097, 400, 300)
# (expansion, output channels, blocks, first stride), MobileNetV2's table cut to 32x32 inputs
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2), (6, 96, 1, 1))
RECIPE = {"epochs": 30, "lr": 4e-3, "batch_size": 64, "weight_decay": 1e-3, "seed": 0}


def load_data() -> dict[str, np.ndarray]:
    """``x_train, y_train, x_val, y_val, x_test, y_test``: float32 images (N, 1, 32, 32)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    y = digits.target.astype(np.int64)
    gen = torch.Generator().manual_seed(0)
    x = _shifted(x, 3, gen) + NOISE * torch.randn(x.shape, generator=gen)
    order = np.random.default_rng(0).permutation(len(y))
    a, b = SPLITS[0], SPLITS[0] + SPLITS[1]
    parts = {"train": order[:a], "val": order[a:b], "test": order[b:]}
    out = {}
    for name, idx in parts.items():
        out[f"x_{name}"] = x[torch.from_numpy(idx)].numpy()
        out[f"y_{name}"] = y[idx]
    return out


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list:
    return [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [*_conv_bn(cin, hidden, 1), nn.ReLU6()]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6()]
        layers += _conv_bn(hidden, cout, 1)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class MobileNetV2Digits(nn.Module):
    def __init__(self, classes: int = 10, stem: int = 32, head: int = 320) -> None:
        super().__init__()
        layers: list[nn.Module] = [*_conv_bn(1, stem, 3), nn.ReLU6()]
        previous = stem
        for expansion, channels, count, stride in BLOCKS:
            for i in range(count):
                layers.append(
                    InvertedResidual(previous, channels, stride if i == 0 else 1, expansion)
                )
                previous = channels
        layers += [*_conv_bn(previous, head, 1), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(head, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def _shifted(x: torch.Tensor, most: int, gen: torch.Generator) -> torch.Tensor:
    """Each image shifted by up to ``most`` pixels each way (zero-padded)."""
    n, m = x.shape[0], most
    padded = nn.functional.pad(x, (m, m, m, m))
    dx = torch.randint(0, 2 * m + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * m + 1, (n,), generator=gen)
    return torch.stack([padded[i, :, dy[i] : dy[i] + SIZE, dx[i] : dx[i] + SIZE] for i in range(n)])


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels and Gaussian noise, on top of the data's own."""
    return _shifted(x, 2, gen) + 0.1 * torch.randn(x.shape, generator=gen)


def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model.eval()(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def teacher() -> nn.Module:
    """The trained model; trained on first use (a few minutes on 2 cores) and cached."""
    return trained(MobileNetV2Digits(), "mobilenet")


def trained(model: nn.Module, name: str) -> nn.Module:
    """``model`` trained on the digits by ``RECIPE`` (the best validation epoch kept), on first
    use, then loaded from the cache (keyed by the recipe and the architecture)."""
    config = {**RECIPE, "arch": repr(model), "noise": NOISE}
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    path = cache_dir() / f"digits-{name}-{key.hexdigest()[:12]}.pt"
    with _exclusive(path):
        if not path.exists():
            d = load_data()
            torch.manual_seed(RECIPE["seed"])
            gen = torch.Generator().manual_seed(RECIPE["seed"])
            x, y = torch.from_numpy(d["x_train"]), torch.from_numpy(d["y_train"])
            bs, epochs = RECIPE["batch_size"], RECIPE["epochs"]
            opt = torch.optim.AdamW(
                model.parameters(), lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"]
            )
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=RECIPE["lr"], epochs=epochs, steps_per_epoch=-(-len(x) // bs)
            )
            best, state = -1.0, None
            for _ in range(epochs):
                model.train()
                order = torch.randperm(len(x), generator=gen)
                for start in range(0, len(x), bs):
                    idx = order[start : start + bs]
                    loss = nn.functional.cross_entropy(model(_augment(x[idx], gen)), y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                val = _accuracy(model, d["x_val"], d["y_val"])
                if val >= best:
                    best, state = val, copy.deepcopy(model.state_dict())
            assert state is not None
            model.load_state_dict(state)
            print(
                f"edgecompress: digits {name} trained: val {best:.4f}, "
                f"test {_accuracy(model, d['x_test'], d['y_test']):.4f}",
                flush=True,
            )
            torch.save(model.state_dict(), path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def task(finetune: FinetuneSettings | None = None) -> ClassificationTask:
    d = load_data()

    def loader(split: str, shuffle: bool) -> DataLoader:
        ds = TensorDataset(torch.from_numpy(d[f"x_{split}"]), torch.from_numpy(d[f"y_{split}"]))
        return DataLoader(ds, batch_size=64 if shuffle else 256, shuffle=shuffle)

    return ClassificationTask(
        train=loader("train", True),
        val=loader("val", False),
        test=loader("test", False),
        finetune=finetune or FinetuneSettings(),
    )


def digits_experiment(name: str, model: Callable[[], nn.Module]) -> Experiment:
    """A digits network's experiment as the benchmarks search it: 8 epochs of distillation,
    one thread, batch 1 (``bench/resnet_digits.py`` builds its own with it)."""
    return Experiment(
        name=name,
        model=model,
        example_input=torch.zeros(1, 1, SIZE, SIZE),
        task=task(FinetuneSettings(epochs=8, temperature=4.0, kd_weight=0.7)),
        target=Target(name="local-cpu", threads=1, batch_size=1),
    )


experiment = digits_experiment("digits-mobilenet", teacher)
