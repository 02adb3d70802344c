"""Distillation losses: soft targets, hard targets, and hints (FitNets) between layer pairs.

Hints pair a student layer with a teacher layer whose outputs share a spatial size (the shape
after the channel dimension: ``(L,)`` for Conv1d, ``(H, W)`` for Conv2d, ``()`` for Linear
features), the last layer of each size on both sides, i.e. the end of each stage. A learned
1x1 adapter maps the student's channels to the teacher's; it is trained with the student and
discarded afterwards. Features are handled channels first: a Linear layer's last dimension is
moved to position 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgecompress.inputs import call
from edgecompress.modules import WEIGHT_LAYERS

KD_MODES = ("soft", "hard")
_ADAPTERS: dict[int, Callable[[int, int], nn.Module]] = {
    0: nn.Linear,
    1: lambda cin, cout: nn.Conv1d(cin, cout, 1),
    2: lambda cin, cout: nn.Conv2d(cin, cout, 1),
}


def soft_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    kd_weight: float,
) -> torch.Tensor:
    """Hinton et al.: T^2 * KL(teacher_T || student_T) * w + CE(student, labels) * (1 - w)."""
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(student_logits, labels)
    return kd_weight * t * t * soft + (1.0 - kd_weight) * hard


def hard_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    kd_weight: float,
) -> torch.Tensor:
    """CE(student, the teacher's predicted labels) * w + CE(student, labels) * (1 - w)."""
    taught = F.cross_entropy(student_logits, teacher_logits.argmax(dim=1))
    return kd_weight * taught + (1.0 - kd_weight) * F.cross_entropy(student_logits, labels)


def logit_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    mode: str,
    temperature: float,
    kd_weight: float,
) -> torch.Tensor:
    """``soft_loss`` or ``hard_loss`` (``mode``, one of ``KD_MODES``)."""
    if mode == "hard":
        return hard_loss(student_logits, teacher_logits, labels, kd_weight=kd_weight)
    if mode != "soft":
        raise ValueError(f"distillation mode {mode!r} is unknown: choose among {KD_MODES}")
    return soft_loss(
        student_logits, teacher_logits, labels, temperature=temperature, kd_weight=kd_weight
    )


def hint_loss(
    student_features: Sequence[torch.Tensor],
    teacher_features: Sequence[torch.Tensor],
    adapters: Iterable[nn.Module],
) -> torch.Tensor:
    """The mean over pairs of MSE(adapter(student feature), teacher feature), channels first."""
    errors = [
        F.mse_loss(adapter(s), t)
        for s, t, adapter in zip(student_features, teacher_features, adapters, strict=True)
    ]
    return torch.stack(errors).mean()


@dataclass(frozen=True)
class HintPair:
    """A student layer taught by a teacher layer; shapes are one example's, channels first."""

    student: str
    teacher: str
    student_shape: tuple[int, ...]
    teacher_shape: tuple[int, ...]

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.student_shape[1:]

    def to_dict(self) -> dict[str, Any]:
        return {
            "student": self.student,
            "teacher": self.teacher,
            "student_shape": list(self.student_shape),
            "teacher_shape": list(self.teacher_shape),
        }


def channels_first(module: nn.Module, output: torch.Tensor) -> torch.Tensor:
    """A layer's output as (batch, channels, *spatial): a Linear's features move to dim 1."""
    return output.movedim(-1, 1) if isinstance(module, nn.Linear) else output


@contextmanager
def capture(model: nn.Module, names: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """While active, the dict holds the latest output (channels first) of each named layer
    (default: every Conv1d, Conv2d and Linear), in execution order. Hooks go on exit."""
    wanted = None if names is None else set(names)
    found: dict[str, torch.Tensor] = {}
    with ExitStack() as hooks:
        for name, module in model.named_modules():
            if isinstance(module, WEIGHT_LAYERS) and (wanted is None or name in wanted):
                handle = module.register_forward_hook(_recorder(found, name))
                hooks.callback(handle.remove)
        yield found


def _recorder(found: dict[str, torch.Tensor], name: str) -> Callable[..., None]:
    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() >= 2:
            found.pop(name, None)  # a layer called again moves to its latest place
            found[name] = channels_first(module, output)

    return record


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients for a probe; every module's training flag is restored."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes:
            module.training = mode


def feature_shapes(model: nn.Module, example: Any) -> dict[str, tuple[int, ...]]:
    """One example's output shape (channels first) of each weight layer run on ``example``, in
    execution order, without the last one (the output layer) and those no adapter fits."""
    with evaluating(model), capture(model) as found:
        call(model, example)
    shapes = {name: tuple(out.shape[1:]) for name, out in found.items()}
    return {n: s for n, s in list(shapes.items())[:-1] if len(s) - 1 in _ADAPTERS}


def hint_pairs(student: nn.Module, teacher: nn.Module, example: Any) -> list[HintPair]:
    """For each spatial size both models produce, the last student layer of that size paired
    with the last teacher layer of that size (student order). ``ValueError`` when none."""
    ours, theirs = feature_shapes(student, example), feature_shapes(teacher, example)
    last_teacher = {shape[1:]: name for name, shape in theirs.items()}
    last_student = {shape[1:]: name for name, shape in ours.items()}
    pairs = [
        HintPair(name, last_teacher[shape[1:]], shape, theirs[last_teacher[shape[1:]]])
        for name, shape in ours.items()
        if last_student[shape[1:]] == name and shape[1:] in last_teacher
    ]
    if not pairs:
        raise ValueError(
            "hint distillation: no teacher and student layers share a spatial size (student "
            f"{sorted(set(last_student))}, teacher {sorted(set(last_teacher))}); set "
            "hint_weight=0 or use a student whose stages match the teacher's resolutions"
        )
    return pairs


def adapter(pair: HintPair) -> nn.Module:
    """A 1x1 convolution (Linear for features without spatial size): student -> teacher channels."""
    return _ADAPTERS[len(pair.spatial)](pair.student_shape[0], pair.teacher_shape[0])


@dataclass(frozen=True)
class Hints:
    """The layer pairs and their adapters for one fine-tuning run."""

    pairs: tuple[HintPair, ...]
    adapters: nn.ModuleList

    @classmethod
    def between(cls, student: nn.Module, teacher: nn.Module, example: Any) -> Hints:
        pairs = tuple(hint_pairs(student, teacher, example))
        return cls(pairs, nn.ModuleList(adapter(p) for p in pairs))

    @contextmanager
    def watch(self, student: nn.Module, teacher: nn.Module) -> Iterator[Callable[[], torch.Tensor]]:
        """While active, the yielded function is the hint loss of the latest forward passes of
        both models (run the teacher under ``no_grad``). Hooks go on exit, even on errors."""
        with (
            capture(student, [p.student for p in self.pairs]) as ours,
            capture(teacher, [p.teacher for p in self.pairs]) as theirs,
        ):
            yield lambda: hint_loss(
                [ours[p.student] for p in self.pairs],
                [theirs[p.teacher] for p in self.pairs],
                self.adapters,
            )


def hint_residual(
    student: nn.Module, teacher: nn.Module, pairs: Sequence[HintPair], example: Any
) -> float:
    """How well the student's features predict the teacher's: the mean over ``pairs`` of the
    MSE left by the best 1x1 adapter (least squares, with a bias) on ``example``."""
    if not pairs:
        raise ValueError("hint_residual needs at least one pair (see hint_pairs)")
    with (
        evaluating(student),
        evaluating(teacher),
        capture(student) as ours,
        capture(teacher) as theirs,
    ):
        call(student, example)
        call(teacher, example)
    errors = [_least_squares_mse(ours[p.student], theirs[p.teacher]) for p in pairs]
    return sum(errors) / len(errors)


def _least_squares_mse(source: torch.Tensor, target: torch.Tensor) -> float:
    x = source.movedim(1, -1).reshape(-1, source.shape[1]).double()
    y = target.movedim(1, -1).reshape(-1, target.shape[1]).double()
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    solution = torch.linalg.lstsq(x, y).solution
    return float(((x @ solution - y) ** 2).mean())
