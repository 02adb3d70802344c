"""Weight quantization in PyTorch: per-channel symmetric grids, stochastic rounding, fake-quant.

A weight quantized to ``bits`` bits takes values ``scale * q`` with integer ``q`` in
``[-(2^(bits-1) - 1), 2^(bits-1) - 1]`` and ``scale = max|w| / (2^(bits-1) - 1)`` per output
channel (dim 0 of a Conv or Linear weight). For 8 bits this is exactly ONNX Runtime's
per-channel symmetric int8 grid, so a weight rounded here is reproduced exactly by ORT's
quantizer: that is how stochastic rounding and quantization-aware training reach the
deployed int8 model.

- ``round_weights``: rounds the final weights onto the grid, to nearest or stochastically
  (``floor(w / scale + u)``, ``u ~ U[0, 1)``: unbiased, ``E[q] = w / scale``), seeded.
- ``FakeQuantTraining``: during fine-tuning, every forward sees the quantized weights (and, for
  int8, quantized inputs), while gradients flow to the fp32 weights (straight-through estimator).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from edgecompress.modules import WEIGHT_LAYERS, weights_read_directly
from edgecompress.plan import ROUNDINGS, InvalidPlan

ACTIVATION_MOMENTUM = 0.1


def levels(bits: int) -> int:
    """The largest integer of a symmetric ``bits``-bit grid (127 for 8 bits)."""
    return 2 ** (bits - 1) - 1


def channel_scale(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel scale, shaped to broadcast against ``weight``."""
    absmax = weight.detach().abs().flatten(1).amax(dim=1)
    scale = torch.where(absmax > 0, absmax / levels(bits), torch.ones_like(absmax))
    return scale.view(-1, *([1] * (weight.dim() - 1)))


def quantize_weight(
    weight: torch.Tensor,
    bits: int,
    *,
    rounding: str = "nearest",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``weight`` on its ``bits``-bit grid (a float tensor of the same shape)."""
    if rounding not in ROUNDINGS:
        raise InvalidPlan(f"method.rounding {rounding!r}: choose one of {ROUNDINGS}")
    scale = channel_scale(weight, bits)
    scaled = weight / scale
    if rounding == "stochastic":
        noise = torch.rand(weight.shape, generator=generator, dtype=weight.dtype)
        q = torch.floor(scaled + noise)
    else:
        q = torch.round(scaled)
    return q.clamp(-levels(bits), levels(bits)) * scale


def weight_modules(model: nn.Module, layer: str) -> list[nn.Module]:
    """The weight layers that make up ``layer``: itself, or its factors after a factorization."""
    modules = dict(model.named_modules())
    if layer not in modules:
        raise InvalidPlan(f"bits: the model has no layer {layer!r}")
    module = modules[layer]
    if isinstance(module, WEIGHT_LAYERS):
        return [module]
    return [m for m in module.modules() if isinstance(m, WEIGHT_LAYERS)]


def linear_layers(model: nn.Module) -> set[str]:
    """Layers that run as Linear/MatMul (a factorized Linear too): int4 weights are theirs."""
    found = set()
    for name, module in model.named_modules():
        parts = [m for m in module.modules() if isinstance(m, WEIGHT_LAYERS)]
        if name and parts and all(isinstance(m, nn.Linear) for m in parts):
            found.add(name)
    return found


def round_weights(model: nn.Module, bits: dict[str, int], *, rounding: str, seed: int) -> None:
    """Rounds each named layer's weight in place onto its grid (model order, one generator)."""
    generator = torch.Generator().manual_seed(seed)
    layers = {layer: weight_modules(model, layer) for layer in bits}  # unknown: InvalidPlan
    order = {name: i for i, name in enumerate(dict(model.named_modules()))}
    with torch.no_grad():
        for layer in sorted(layers, key=order.__getitem__):
            for module in layers[layer]:
                weight = _weight(module, "weight")
                weight.copy_(
                    quantize_weight(weight, bits[layer], rounding=rounding, generator=generator)
                )


def _weight(module: nn.Module, name: str) -> torch.Tensor:
    weight = getattr(module, name)
    assert isinstance(weight, torch.Tensor)
    return weight


def _ste(x: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """Forward: ``quantized``; backward: identity (the straight-through estimator)."""
    return x + (quantized - x).detach()


class _ActivationRange:
    """Running min/max of a layer's input (uint8, per tensor, as ORT calibrates it)."""

    def __init__(self) -> None:
        self.low: torch.Tensor | None = None
        self.high: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        low, high = x.detach().min().clamp(max=0), x.detach().max().clamp(min=0)
        if self.low is None or self.high is None:
            self.low, self.high = low, high
        elif training:
            m = ACTIVATION_MOMENTUM
            self.low = (1 - m) * self.low + m * low
            self.high = (1 - m) * self.high + m * high
        scale = ((self.high - self.low) / 255).clamp(min=1e-8)
        zero = torch.round(-self.low / scale)
        q = (torch.round(x / scale) + zero).clamp(0, 255)
        return _ste(x, (q - zero) * scale)


@contextmanager
def fake_quant_training(
    model: nn.Module, bits: dict[str, int], *, activations: Collection[str] = ()
) -> Iterator[None]:
    """Within the block, the named layers compute with fake-quantized weights (and the layers
    in ``activations`` with fake-quantized uint8 inputs); gradients reach the fp32 weights.

    Works on a weight held by ``torch.nn.utils.prune`` (its mask hook runs first). On exit the
    layers are plain again (fp32 weights, trained), whatever happened inside.
    """
    read = weights_read_directly(model)
    bad = [layer for layer in bits if layer in read or f"{layer}.out_proj" in read]
    if bad:
        raise InvalidPlan(
            f"bits: {bad} cannot train with fake-quantized weights (their parent, attention or "
            "a fused transformer layer, reads the weights itself); use static or dynamic int8"
        )
    undo: list[Callable[[], None]] = []
    try:
        for layer, b in bits.items():
            for module in weight_modules(model, layer):
                undo.append(_attach(module, b, act=layer in activations))
        yield
    finally:
        for restore in reversed(undo):
            restore()


def _attach(module: nn.Module, bits: int, *, act: bool) -> Callable[[], None]:
    owned = "weight" in module._parameters  # else a pruning mask hook computes it each forward
    if owned:
        param = module._parameters.pop("weight")
        assert param is not None
        module.register_parameter("weight_fp", param)
        module.weight = param.detach()  # replaced at every forward
    observer = _ActivationRange() if act else None

    def hook(mod: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
        source = _weight(mod, "weight_fp" if owned else "weight")
        mod.weight = _ste(source, quantize_weight(source, bits))
        if observer is not None:
            return (observer(args[0], mod.training), *args[1:])
        return None

    handle = module.register_forward_pre_hook(hook)

    def restore() -> None:
        handle.remove()
        if owned:
            if "weight" in module.__dict__:
                del module.__dict__["weight"]
            module.register_parameter("weight", module._parameters.pop("weight_fp"))

    return restore
