"""Low-rank factorization of layers: each named layer becomes a short ``nn.Sequential``.

Plan entries read here:

- ``rank.<layer>``: the share of the layer's multiply-adds kept, in (0, 1]. 1.0 leaves it dense;
  below 1 the layer takes the largest ranks whose factors cost at most that share (at least
  rank 1). A layer that no rank makes cheaper stays dense (``ranks`` reports it as ``None``);
- ``method.decomposition``: ``tucker2`` (default) or ``spatial_svd``, for Conv2d kernels other
  than 1x1. Conv1d kernels wider than 1 always take ``tucker2``.

Decompositions (the stride, padding and dilation go where they keep the function exact):

- ``Linear`` and 1x1 convolutions: truncated SVD, two layers (``U sqrt(S)``, ``sqrt(S) V^T``);
- ``tucker2``: 1x1 (Cin -> r_in), the original kernel (r_in -> r_out), 1x1 (r_out -> Cout);
  HOSVD on the two channel modes, refined by a few HOOI sweeps. Ranks move together:
  ``r_in = ceil(f * Cin)``, ``r_out = ceil(f * Cout)`` for one fraction ``f``;
- ``spatial_svd``: a (kh, 1) convolution (Cin -> r) then a (1, kw) one (r -> Cout), from the SVD
  of the weight as a (Cin*kh, Cout*kw) matrix. Every padding mode stays exact: the padding is
  split by axis, and padding one axis commutes with a convolution along the other.

Multiply-adds are counted per output position of the dense layer (no input size needed). A
factor that runs at a finer grid is charged the input positions each output position stands
for: the leading 1x1 of ``tucker2`` runs before the strided core (``prod(stride)`` times), the
(kh, 1) factor of ``spatial_svd`` keeps the input width (``stride_w`` times). The count is exact
when the input extent is ``stride`` times the output extent, and close otherwise.

Grouped (depthwise) and transposed convolutions and other modules are not factorized: a share
below 1 on them is an ``InvalidPlan``. The SVDs run in float64; weights are cast back.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from fractions import Fraction
from typing import Any

import torch
from torch import nn

from edgecompress.compress.candidate import Report
from edgecompress.modules import weights_read_directly
from edgecompress.plan import InvalidPlan, Plan

METHODS = ("tucker2", "spatial_svd")
HOOI_SWEEPS = 2
GEOMETRY = ("kernel_size", "stride", "padding", "dilation", "padding_mode")
Factorizable = nn.Linear | nn.Conv1d | nn.Conv2d
Conv = nn.Conv1d | nn.Conv2d


class LowRankFactorizer:
    """``apply(model, plan)`` factorizes each ``rank.<layer>`` down to that share of its MACs;
    its report: ``ranks``, the ranks picked per layer (``None``: the layer stays dense)."""

    def apply(self, model: nn.Module, plan: Plan) -> tuple[nn.Module, Report]:
        chosen = _choose(model, plan)
        method = _method(plan)
        model = copy.deepcopy(model)
        for name, ranks in chosen.items():
            if ranks is not None:
                low = factorize(model.get_submodule(name), ranks=ranks, method=method)
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, low)
        picked = {name: None if r is None else list(r) for name, r in chosen.items()}
        return model, {"ranks": picked}


def factorize(
    module: nn.Module, *, ranks: tuple[int, ...] | int, method: str = "tucker2"
) -> nn.Sequential:
    """``module`` as a sequence of factors at the given ranks (full ranks are exact).

    ``ranks`` is one int for the SVD forms, ``(r_in, r_out)`` for ``tucker2``.
    """
    form = _form(module, method)
    given = (ranks,) if isinstance(ranks, int) else tuple(ranks)
    full = form.full()
    if len(given) != len(full) or not all(1 <= r <= f for r, f in zip(given, full, strict=True)):
        raise ValueError(f"{form.name}: ranks {given} must be {len(full)} ints in 1..{full}")
    with torch.no_grad():
        layers = form.build(given)
    return nn.Sequential(*layers).train(module.training)


def not_factorizable(module: nn.Module) -> str | None:
    """Why ``module`` cannot be factorized, or ``None`` when it can."""
    if type(module) not in (nn.Linear, nn.Conv1d, nn.Conv2d):
        return f"{type(module).__name__} is not a plain Linear, Conv1d or Conv2d"
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups != 1:
        return f"a grouped convolution (groups={module.groups}) has no low-rank form here"
    return None


def choose_ranks(module: nn.Module, share: float, method: str) -> tuple[int, ...] | None:
    """The largest ranks costing at most ``share`` of the dense MACs (at least the smallest).

    ``None`` when the layer stays dense: ``share`` is 1, or no rank saves multiply-adds.
    """
    form = _form(module, method)
    if not 0.0 < share <= 1.0:
        raise InvalidPlan(f"a share of multiply-adds must lie in (0, 1], got {share!r}")
    dense = form.dense_macs()
    saving = [r for r in form.candidates() if form.macs(r) < dense] if share < 1.0 else []
    if not saving:
        return None
    fits = [r for r in saving if form.macs(r) <= share * dense]
    return fits[-1] if fits else saving[0]


def _choose(model: nn.Module, plan: Plan) -> dict[str, tuple[int, ...] | None]:
    shares = plan.section("rank")
    method = _method(plan)
    modules = dict(model.named_modules())
    unknown = sorted(name for name in shares if not name or name not in modules)
    if unknown:
        raise InvalidPlan(f"rank: the model has no layers {unknown}")
    bad = {name: v for name, v in shares.items() if not _is_share(v)}
    if bad:
        raise InvalidPlan(f"rank: the share of multiply-adds kept must lie in (0, 1], got {bad}")
    fixed = [n for n in weights_read_directly(model) if n in shares and float(shares[n]) < 1]
    if fixed:
        raise InvalidPlan(
            f"rank: the parents of {fixed} read their weights themselves (attention, a fused "
            "transformer layer), so a factorization cannot replace them; leave them dense"
        )
    return {name: _layer_ranks(name, modules[name], float(v), method) for name, v in shares.items()}


def _layer_ranks(name: str, module: nn.Module, share: float, method: str) -> tuple[int, ...] | None:
    if share == 1.0:
        return None
    reason = not_factorizable(module)
    if reason is not None:
        raise InvalidPlan(f"rank.{name}: {reason}; set it to 1.0 or leave it out of the plan")
    return choose_ranks(module, share, method)


def _method(plan: Plan) -> str:
    method = plan.get("method.decomposition", "tucker2")
    if method not in METHODS:
        raise InvalidPlan(f"method.decomposition {method!r}: choose one of {METHODS}")
    return str(method)


def _is_share(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return 0.0 < value <= 1.0


def _form(module: nn.Module, method: str) -> _Form:
    if method not in METHODS:
        raise InvalidPlan(f"decomposition {method!r}: choose one of {METHODS}")
    reason = not_factorizable(module)
    if reason is not None:
        raise InvalidPlan(reason)
    if isinstance(module, nn.Linear):
        return _Svd(module)
    assert isinstance(module, Conv)
    if all(k == 1 for k in module.kernel_size):
        return _Svd(module)
    if method == "spatial_svd" and isinstance(module, nn.Conv2d):
        return _SpatialSvd(module)
    return _Tucker2(module)


class _Form(ABC):
    """One way to factorize one layer: its rank choices, their cost, and the factors."""

    name = ""

    def __init__(self, module: Factorizable) -> None:
        self.module = module
        self.weight = module.weight.detach()
        self.cout, self.cin = self.weight.shape[:2]

    def dense_macs(self) -> int:
        return self.weight.numel()

    def candidates(self) -> list[tuple[int, ...]]:
        """Every distinct rank choice, cheapest first."""
        return [(r,) for r in range(1, self.full()[0] + 1)]

    @abstractmethod
    def full(self) -> tuple[int, ...]: ...

    @abstractmethod
    def macs(self, ranks: tuple[int, ...]) -> int: ...

    @abstractmethod
    def build(self, ranks: tuple[int, ...]) -> list[nn.Module]: ...

    def _layer(self, kind: type[nn.Module], *args: Any, last: bool = False, **kw: Any) -> nn.Module:
        """A new layer on the weight's device and dtype; the ``last`` one takes the bias."""
        bias = last and self.module.bias is not None
        like = {"device": self.weight.device, "dtype": self.weight.dtype}
        layer = kind(*args, bias=bias, **kw, **like)
        if bias:
            assert isinstance(layer.bias, torch.Tensor) and self.module.bias is not None
            layer.bias.copy_(self.module.bias)
        return layer


class _Svd(_Form):
    """Linear or 1x1 convolution: two layers of the same kind, the geometry on the first."""

    name = "svd"

    def full(self) -> tuple[int, ...]:
        return (min(self.cin, self.cout),)

    def macs(self, ranks: tuple[int, ...]) -> int:
        return ranks[0] * (self.cin + self.cout)

    def build(self, ranks: tuple[int, ...]) -> list[nn.Module]:
        (r,) = ranks
        left, right = _svd(self.weight.flatten(1), r)
        m = self.module
        if isinstance(m, nn.Linear):
            first = self._layer(nn.Linear, self.cin, r)
            second = self._layer(nn.Linear, r, self.cout, last=True)
        else:
            first = self._layer(type(m), self.cin, r, **_geometry(m))
            second = self._layer(type(m), r, self.cout, 1, last=True)
        return [_load(first, right), _load(second, left)]


class _Tucker2(_Form):
    """1x1 down to r_in channels, the original kernel r_in -> r_out, 1x1 up to Cout."""

    name = "tucker2"

    def __init__(self, module: Conv) -> None:
        super().__init__(module)
        self.conv = module

    def full(self) -> tuple[int, ...]:
        return (self.cin, self.cout)

    def macs(self, ranks: tuple[int, ...]) -> int:
        (r_in, r_out), c = ranks, self.conv
        ahead = self.cin * r_in * math.prod(c.stride)  # runs before the stride
        return ahead + r_in * r_out * math.prod(c.kernel_size) + r_out * self.cout

    def candidates(self) -> list[tuple[int, ...]]:
        steps = {Fraction(k, n) for n in (self.cin, self.cout) for k in range(1, n + 1)}
        return [(math.ceil(f * self.cin), math.ceil(f * self.cout)) for f in sorted(steps)]

    def build(self, ranks: tuple[int, ...]) -> list[nn.Module]:
        (r_in, r_out), kind = ranks, type(self.conv)
        weight = self.weight.double()
        u_in, u_out = _tucker2(weight, r_in, r_out)
        core = torch.einsum("oc...,ob,ca->ba...", weight, u_out, u_in)
        first = _load(self._layer(kind, self.cin, r_in, 1), u_in.T)
        middle = _load(self._layer(kind, r_in, r_out, **_geometry(self.conv)), core)
        last = _load(self._layer(kind, r_out, self.cout, 1, last=True), u_out)
        return [first, middle, last]


class _SpatialSvd(_Form):
    """A (kh, 1) convolution Cin -> r, then a (1, kw) one r -> Cout."""

    name = "spatial_svd"

    def __init__(self, module: nn.Conv2d) -> None:
        super().__init__(module)
        self.conv = module
        self.kh, self.kw = module.kernel_size

    def full(self) -> tuple[int, ...]:
        return (min(self.cin * self.kh, self.cout * self.kw),)

    def macs(self, ranks: tuple[int, ...]) -> int:
        width = self.conv.stride[1]  # the (kh, 1) factor runs at the input width
        return ranks[0] * (self.cin * self.kh * width + self.kw * self.cout)

    def build(self, ranks: tuple[int, ...]) -> list[nn.Module]:
        (r,) = ranks
        matrix = self.weight.permute(1, 2, 0, 3).reshape(self.cin * self.kh, -1)
        left, right = _svd(matrix, r)  # (Cin*kh, r) and (r, Cout*kw)
        first = self._layer(nn.Conv2d, self.cin, r, **self._along(0))
        second = self._layer(nn.Conv2d, r, self.cout, last=True, **self._along(1))
        horizontal = right.reshape(r, self.cout, self.kw).permute(1, 0, 2)
        return [_load(first, left.T), _load(second, horizontal)]

    def _along(self, axis: int) -> dict[str, Any]:
        """The layer's geometry on one axis (0: height, 1: width), a 1x1 identity on the other."""
        c = self.conv
        geometry = {k: _on(axis, getattr(c, k), 1) for k in ("kernel_size", "stride", "dilation")}
        pad = c.padding if isinstance(c.padding, str) else _on(axis, c.padding, 0)
        return {**geometry, "padding": pad, "padding_mode": c.padding_mode}


def _on(axis: int, pair: tuple[int, ...], other: int) -> tuple[int, int]:
    return (pair[0], other) if axis == 0 else (other, pair[1])


def _geometry(conv: Conv) -> dict[str, Any]:
    return {name: getattr(conv, name) for name in GEOMETRY}


def _load(layer: nn.Module, weight: torch.Tensor) -> nn.Module:
    """``layer`` with ``weight`` (any layout of the right size) cast into its weight."""
    target = layer.weight
    assert isinstance(target, torch.Tensor)
    target.copy_(weight.reshape(target.shape))
    return layer


def _svd(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, B)`` with ``A @ B`` the best rank-``rank`` approximation, the scale split evenly."""
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


def _tucker2(weight: torch.Tensor, r_in: int, r_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal bases ``(U_in (Cin, r_in), U_out (Cout, r_out))``: HOSVD, then HOOI sweeps."""
    u_in = _leading(weight.transpose(0, 1).flatten(1), r_in)
    u_out = _leading(weight.flatten(1), r_out)
    for _ in range(HOOI_SWEEPS):
        u_in = _leading(torch.einsum("oc...,ob->cb...", weight, u_out).flatten(1), r_in)
        u_out = _leading(torch.einsum("oc...,ca->oa...", weight, u_in).flatten(1), r_out)
    return u_in, u_out


def _leading(matrix: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` leading left singular vectors (completed to ``k`` when the matrix is wide)."""
    u = torch.linalg.svd(matrix, full_matrices=k > min(matrix.shape))[0]
    return u[:, :k]
