"""A ResNet-style 2-D network for bench/search_vs_hand.py, at a realistic size (issue 14).

ResNet-18's layout cut to 32x32 inputs: a 3x3 stem, four stages of two basic blocks (two 3x3
convolutions with batch norm and ReLU, an identity shortcut, or a strided 1x1 projection where
the shape changes), widths 24, 48, 96 and 192, global average pooling and a linear classifier:
about 1.6M parameters and 78M multiply-adds, a few milliseconds at batch 1 on one thread (the
1-5 ms the issue asks for, where the MobileNet of ``mobilenet_digits.py`` runs in 0.3-0.5 ms).
Never tuned on by any part of the search.

The data and the teacher's training recipe are ``mobilenet_digits.py``'s: scikit-learn's 1,797
digits, upsampled to 32x32, shifted and noised once, split 1,097 / 400 / 300.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

# experiment files are imported by path (in every worker too): the sibling by its folder
sys.path.insert(0, str(Path(__file__).parent))
from mobilenet_digits import digits_experiment, trained  # noqa: E402

WIDTHS = (24, 48, 96, 192)
BLOCKS = 2  # per stage


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetDigits(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, WIDTHS[0], 3, 1, 1, bias=False), nn.BatchNorm2d(WIDTHS[0]), nn.ReLU()
        )
        stages: list[nn.Module] = []
        previous = WIDTHS[0]
        for i, width in enumerate(WIDTHS):
            blocks = [BasicBlock(previous, width, 1 if i == 0 else 2)]
            blocks += [BasicBlock(width, width, 1) for _ in range(BLOCKS - 1)]
            stages.append(nn.Sequential(*blocks))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(previous, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.stages(self.stem(x))).flatten(1))


def teacher() -> nn.Module:
    """The trained model; trained on first use (a few minutes on 2 cores) and cached."""
    return trained(ResNetDigits(), "resnet")


experiment = digits_experiment("digits-resnet", teacher)
