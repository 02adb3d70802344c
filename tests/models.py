"""A zoo of small classifiers for tests: each runs a forward pass in a few milliseconds on a CPU.

``ZOO[name]()`` builds a model with a seeded initialisation (``torch.manual_seed(0)``);
``EXAMPLE_INPUTS[name]`` is an input of the shape it takes (batch 2). Every model returns logits
of shape ``(batch, classes)``. Modules have readable attribute names, so layer names read like
``blocks.1.skip.0`` or ``blocks.0.attn``; the output layer is always ``head``, registered last.

The models cover the structures a structured pruner must keep consistent: batch norm after a
convolution (``PlainCNN``), residual additions with identity and projection skips and a channel
concatenation (``ResidualCNN``), depthwise convolutions and inverted residuals
(``DepthwiseBlockNet``), plain Linear layers with a LayerNorm (``MLP``) and multi-head
self-attention with a learned positional embedding (``TinyTransformer``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

CLASSES = 4


class PlainCNN(nn.Module):
    """Input ``(B, 1, 12, 12)``: a stem, two Conv+BN+ReLU layers, global pooling, a Linear head."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, stride=2)
        self.bn2 = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.relu(self.bn1(self.conv1(h)))
        h = torch.relu(self.bn2(self.conv2(h)))
        return self.head(torch.flatten(self.pool(h), 1))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions added to a skip: the identity, or a 1x1 projection if shapes differ."""

    def __init__(self, channels_in: int, channels_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            self.skip = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, 1, stride, bias=False),
                nn.BatchNorm2d(channels_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return torch.relu(h + self.skip(x))


class Branches(nn.Module):
    """A 3x3 and a 1x1 branch, concatenated along channels."""

    def __init__(self, channels_in: int, channels_each: int) -> None:
        super().__init__()
        self.branch3x3 = nn.Conv2d(channels_in, channels_each, 3, padding=1, bias=False)
        self.bn3x3 = nn.BatchNorm2d(channels_each)
        self.branch1x1 = nn.Conv2d(channels_in, channels_each, 1, bias=False)
        self.bn1x1 = nn.BatchNorm2d(channels_each)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.bn3x3(self.branch3x3(x))
        b = self.bn1x1(self.branch1x1(x))
        return torch.relu(torch.cat([a, b], dim=1))


class ResidualCNN(nn.Module):
    """Input ``(B, 3, 12, 12)``: stem, an identity-skip block, a projection-skip block, a concat."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(16)
        self.blocks = nn.ModuleList([BasicBlock(16, 16), BasicBlock(16, 32, stride=2)])
        self.mix = Branches(32, 16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem_bn(self.stem(x)))
        for block in self.blocks:
            h = block(h)
        h = self.mix(h)
        return self.head(torch.flatten(self.pool(h), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project; plus its input if shapes match."""

    def __init__(self, channels_in: int, channels_out: int, expand: int, stride: int = 1) -> None:
        super().__init__()
        hidden = channels_in * expand
        self.expand = nn.Conv2d(channels_in, hidden, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(hidden)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, stride, padding=1, groups=hidden, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, channels_out, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(channels_out)
        self.act = nn.ReLU6()
        self.residual = stride == 1 and channels_in == channels_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.expand_bn(self.expand(x)))
        h = self.act(self.depthwise_bn(self.depthwise(h)))
        h = self.project_bn(self.project(h))
        return x + h if self.residual else h


class DepthwiseBlockNet(nn.Module):
    """Input ``(B, 3, 12, 12)``: a stem and two depthwise-separable inverted-residual blocks."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(16)
        self.act = nn.ReLU6()
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, expand=4),
            InvertedResidual(16, 24, expand=4, stride=2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(24, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.stem_bn(self.stem(x)))
        h = self.blocks(h)
        return self.head(torch.flatten(self.pool(h), 1))


class MLP(nn.Module):
    """Input ``(B, 32)``: three Linear layers with ReLU and a LayerNorm."""

    def __init__(self, features: int = 32, hidden: int = 64, classes: int = CLASSES) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(features, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm(self.fc1(self.flatten(x))))
        h = torch.relu(self.fc2(h))
        return self.head(h)


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer: self-attention and a feed-forward block, each residual.

    Built from ``nn.MultiheadAttention`` rather than ``nn.TransformerEncoderLayer``, whose
    inference fast path replaces the submodules' calls by one fused kernel.
    """

    def __init__(self, d_model: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class TinyTransformer(nn.Module):
    """Input ``(B, 8, 16)``: 8 tokens of 16 features; two encoder layers, mean pooling, a head."""

    def __init__(
        self,
        tokens: int = 8,
        features: int = 16,
        d_model: int = 32,
        heads: int = 4,
        hidden: int = 64,
        layers: int = 2,
        classes: int = CLASSES,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(features, d_model)
        self.pos = nn.Parameter(torch.randn(1, tokens, d_model) * 0.02)
        self.blocks = nn.ModuleList([EncoderLayer(d_model, heads, hidden) for _ in range(layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.pos
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h).mean(dim=1))


def _seeded(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def factory() -> nn.Module:
        torch.manual_seed(0)
        return build().eval()

    return factory


ZOO: dict[str, Callable[[], nn.Module]] = {
    "plain_cnn": _seeded(PlainCNN),
    "residual_cnn": _seeded(ResidualCNN),
    "depthwise": _seeded(DepthwiseBlockNet),
    "mlp": _seeded(MLP),
    "transformer": _seeded(TinyTransformer),
}

_generator = torch.Generator().manual_seed(0)
EXAMPLE_INPUTS: dict[str, torch.Tensor] = {
    "plain_cnn": torch.randn(2, 1, 12, 12, generator=_generator),
    "residual_cnn": torch.randn(2, 3, 12, 12, generator=_generator),
    "depthwise": torch.randn(2, 3, 12, 12, generator=_generator),
    "mlp": torch.randn(2, 32, generator=_generator),
    "transformer": torch.randn(2, 8, 16, generator=_generator),
}

OUTPUT_LAYER = "head"
