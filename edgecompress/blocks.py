"""Blocks of a model a student may drop, grouped into stages; and the student family a user
supplies. Shared facts: the spaces build knobs from them, the compressors build students.

A *unit* is a removable piece of an ``nn.Sequential`` or ``nn.ModuleList``: a child that
contains Conv1d/Conv2d/Linear weights (a residual block, a transformer layer), or, in a flat
container such as ``[Conv, BN, ReLU, Conv, BN, ReLU]``, a run of children that starts at a
weight layer and ends before the next one. A unit is *droppable* when, on the example input,
each of its children runs exactly once, it takes one tensor and returns one of the same shape
(so ``PassThrough()`` can stand in for it), and it does not hold the model's output layer. A
unit of one module may take more arguments after that tensor (a Hugging Face encoder layer
takes the hidden states, then the attention mask and keyword arguments): the stand-in returns
its first argument and ignores the rest.
A *stage* is a maximal run of consecutive droppable units of one container with one shape.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgecompress.inputs import call
from edgecompress.modules import WEIGHT_LAYERS, weights_read_directly

CONTAINERS = (nn.Sequential, nn.ModuleList)
Shape = tuple[int, ...]


class PassThrough(nn.Identity):
    """What stands in for a dropped unit: returns its first argument, ignoring any other."""

    def forward(self, input: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: A002
        return input


@dataclass(frozen=True)
class Unit:
    """Children ``indices`` of a container, by full module name (``names``); ``layers``: the
    weight layers inside, in model order; ``root``: the first of them whose output channels
    can be pruned (``None`` when its parent reads every weight itself, as attention does)."""

    indices: tuple[int, ...]
    names: tuple[str, ...]
    layers: tuple[str, ...]
    root: str | None


@dataclass(frozen=True)
class Stage:
    """Consecutive droppable units of one container, all with the input/output ``shape``;
    ``channels``: the output channels of each unit's last weight layer."""

    name: str
    container: str
    units: tuple[Unit, ...]
    channels: int
    shape: Shape

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(layer for unit in self.units for layer in unit.layers)


@dataclass
class _Calls:
    """What the forward hooks saw of one module (its last call's tensors)."""

    count: int = 0
    plain: bool = True  # every call took one tensor first (and perhaps more arguments)
    extra: bool = False  # a call took more arguments than that tensor
    input: torch.Tensor | None = None
    output: torch.Tensor | None = None


def find_stages(model: nn.Module, example_input: Any) -> list[Stage]:
    """The stages of ``model`` in model order, named ``stage0``, ``stage1``, ...; none (an empty
    list) when nothing can be dropped. Runs one forward pass on a copy; ``model`` is untouched.

    Units of an ``nn.ModuleList`` count only where one unit's output is the next one's input
    (``h = block(h)``), not where the model adds it to its input (``x = x + f(x)``), as an
    identity would double it. Containers inside a droppable unit are not searched: the outer
    unit is the coarser, more natural thing to drop (a whole residual block).
    """
    probe = copy.deepcopy(model).eval()
    boxes = {n: _units(probe, n, m) for n, m in probe.named_modules() if isinstance(m, CONTAINERS)}
    calls = _trace(probe, example_input, [n for us in boxes.values() for u in us for n in u.names])
    layers = [n for n, m in probe.named_modules() if isinstance(m, WEIGHT_LAYERS)]
    runs = []
    droppable: dict[tuple[str, ...], Shape] = {}
    for name, units in boxes.items():
        links = _links(units, calls, isinstance(probe.get_submodule(name), nn.Sequential))
        droppable.update(_droppable(units, calls, links, layers[-1:]))
        runs.append((name, units, links))
    outer = [n for names in droppable for n in names]
    found = [
        run
        for name, units, links in runs
        if not any(name == o or name.startswith(o + ".") for o in outer)
        for run in _runs(name, units, links, droppable)
    ]
    order = {n: i for i, (n, _) in enumerate(probe.named_modules(remove_duplicate=False))}
    found.sort(key=lambda run: order.get(run[1][0].names[0], 0))
    return [
        Stage(f"stage{i}", c, tuple(us), _channels(probe.get_submodule(us[0].layers[-1])), shape)
        for i, (c, us, shape) in enumerate(found)
    ]


def _has_weights(module: nn.Module) -> bool:
    return any(isinstance(m, WEIGHT_LAYERS) for m in module.modules())


def _units(model: nn.Module, container_name: str, container: nn.Module) -> list[Unit]:
    children = [(k, m) for k, m in container._modules.items() if m is not None]
    runs: list[list[int]] = []
    open_run = False
    for i, (_, child) in enumerate(children):
        if isinstance(child, WEIGHT_LAYERS):
            runs.append([i])
            open_run = True
        elif _has_weights(child):
            runs.append([i])
            open_run = False
        elif open_run:
            runs[-1].append(i)
    prefix = f"{container_name}." if container_name else ""
    read_directly = set(weights_read_directly(model))
    units = []
    for run in runs:
        names = tuple(prefix + children[i][0] for i in run)
        layers = tuple(
            f"{name}.{sub}" if sub else name
            for name, i in zip(names, run, strict=True)
            for sub, m in children[i][1].named_modules()
            if isinstance(m, WEIGHT_LAYERS)
        )
        root = next((layer for layer in layers if layer not in read_directly), None)
        units.append(Unit(tuple(run), names, layers, root))
    return units


def _trace(model: nn.Module, x: Any, names: list[str]) -> dict[str, _Calls]:
    calls = {name: _Calls() for name in names}
    handles = []
    for name in names:
        module = model.get_submodule(name)
        handles.append(module.register_forward_pre_hook(_before(calls[name]), with_kwargs=True))
        handles.append(module.register_forward_hook(_after(calls[name])))
    try:
        with torch.no_grad():
            call(model, x)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _before(record: _Calls) -> Callable[..., None]:
    def hook(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        record.count += 1
        tensor = len(args) >= 1 and isinstance(args[0], torch.Tensor)
        record.plain = record.plain and tensor
        record.extra = record.extra or len(args) > 1 or bool(kwargs)
        record.input = args[0] if tensor else None

    return hook


def _after(record: _Calls) -> Callable[..., None]:
    def hook(_: nn.Module, __: tuple[Any, ...], output: Any) -> None:
        record.output = output if isinstance(output, torch.Tensor) else None

    return hook


def _links(units: list[Unit], calls: dict[str, _Calls], sequential: bool) -> list[bool]:
    """For each unit, whether it takes the previous unit's output (always, in a Sequential,
    whose first unit counts as linked too)."""
    links = [sequential]
    for previous, unit in zip(units, units[1:], strict=False):
        given = calls[unit.names[0]].input
        links.append(
            sequential or (given is not None and given is calls[previous.names[-1]].output)
        )
    return links


def _droppable(
    units: list[Unit], calls: dict[str, _Calls], links: list[bool], output_layer: list[str]
) -> dict[tuple[str, ...], Shape]:
    """The units an identity can stand in for, with their input (= output) shape."""
    found = {}
    for i, unit in enumerate(units):
        chained = links[i] or (i + 1 < len(units) and links[i + 1])
        shape = _fits(unit, calls)
        if chained and shape is not None and not set(output_layer) & set(unit.layers):
            found[unit.names] = shape
    return found


def _fits(unit: Unit, calls: dict[str, _Calls]) -> Shape | None:
    """The unit's shape when each child runs once and it maps one tensor to the same shape."""
    if any(calls[name].count != 1 for name in unit.names):
        return None
    first = calls[unit.names[0]]
    given, made = first.input, calls[unit.names[-1]].output
    if not first.plain or given is None or made is None or given.shape != made.shape:
        return None
    if first.extra and len(unit.names) > 1:  # the arguments after the first reach no stand-in
        return None
    return tuple(given.shape)


def _runs(
    container: str, units: list[Unit], links: list[bool], droppable: dict[tuple[str, ...], Shape]
) -> list[tuple[str, list[Unit], Shape]]:
    runs: list[tuple[str, list[Unit], Shape]] = []
    joined = False  # the previous unit is droppable and this one takes its output
    for unit, link in zip(units, links, strict=True):
        shape = droppable.get(unit.names)
        if shape is not None and joined and link and runs[-1][2] == shape:
            runs[-1][1].append(unit)
        elif shape is not None:
            runs.append((container, [unit], shape))
        joined = shape is not None
    return runs


def _channels(layer: nn.Module) -> int:
    if isinstance(layer, nn.Linear):
        return layer.out_features
    assert isinstance(layer, (nn.Conv1d, nn.Conv2d))
    return layer.out_channels


@dataclass(frozen=True, kw_only=True)
class StudentFamily:
    """A family of student architectures the user supplies: ``build(width=w, depth=d)``
    returns a fresh model for a width multiplier ``w`` in ``width`` = (low, high) and a depth
    ``d`` in ``depth`` = (low, high), e.g. the teacher's own class at a smaller width and depth.
    Its members are trained from scratch, distilled from the teacher."""

    build: Callable[..., nn.Module] = field(repr=False)
    width: tuple[float, float]
    depth: tuple[int, int]

    def __post_init__(self) -> None:
        if not callable(self.build):
            raise ValueError(
                f"StudentFamily.build must be a function build(width=..., depth=...) -> "
                f"nn.Module, got {self.build!r}"
            )
        w, d = self.width, self.depth
        if not (_pair(w, (int, float)) and 0 < w[0] <= w[1]):
            raise ValueError(
                f"StudentFamily.width must be (low, high) multipliers with 0 < low <= high, "
                f"got {w!r}; e.g. width=(0.25, 1.0)"
            )
        if not (_pair(d, (int,)) and 1 <= d[0] <= d[1]):
            raise ValueError(
                f"StudentFamily.depth must be (low, high) integers with 1 <= low <= high, "
                f"got {d!r}; e.g. depth=(2, 6)"
            )

    @property
    def smallest(self) -> tuple[float, int]:
        """(width, depth) of the smallest member."""
        return float(self.width[0]), self.depth[0]

    @property
    def largest(self) -> tuple[float, int]:
        """(width, depth) of the largest member."""
        return float(self.width[1]), self.depth[1]


def _pair(value: object, types: tuple[type, ...]) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, types) and not isinstance(v, bool) for v in value)
    )
