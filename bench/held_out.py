"""A model the search was never tuned on, for bench/search_vs_hand.py.

A 1-D CNN of uneven widths and kernels on MNIST-1D: five conv-BN-ReLU blocks (64, 160, 256, 192
and 96 channels; kernels 7, 5, 5, 3, 3), a max-pool halving the length after the second block,
global average pooling and one linear layer: unlike the examples, no flatten, no hidden linear
layer, and layers whose cost and sensitivity differ a lot. Trained once with the examples'
recipe (a few minutes on 2 cores) and cached beside their teachers. Ray workers import it by
path (``bench/held_out.py:experiment``).
"""

from __future__ import annotations

import torch
from torch import nn

from edgecompress import Experiment, FinetuneSettings, Target
from edgecompress.tasks import mnist1d

WIDTHS = (64, 160, 256, 192, 96)
KERNELS = (7, 5, 5, 3, 3)


class UnevenCNN(nn.Module):
    def __init__(self, classes: int = 10) -> None:
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
        self.head = nn.Linear(previous, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x.unsqueeze(1))).flatten(1))


def teacher() -> nn.Module:
    """The trained model; trained on first use and cached (keyed by its architecture)."""
    return mnist1d.trained(UnevenCNN(), "uneven")


experiment = Experiment(
    name="mnist1d-uneven",
    model=teacher,
    example_input=torch.zeros(1, 40),
    task=mnist1d.task(finetune=FinetuneSettings(epochs=8, temperature=4.0, kd_weight=0.7)),
    target=Target(name="local-cpu", threads=1, batch_size=1),
)
