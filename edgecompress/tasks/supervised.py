"""SupervisedTask: the task contract (data, loss, distillation, metric) and the fine-tune loop.

A task is the user's side of a search: loaders of ``(inputs, targets)``, the loss a student is
fine-tuned with, how it learns from the teacher's outputs, how far a compressed model's outputs
are from the teacher's (the sensitivity profile), and the metrics scored on the deployed ONNX
model's outputs. ``ClassificationTask`` and ``RegressionTask`` are built in; another task
(segmentation, detection, ranking, ...) subclasses ``SupervisedTask`` and overrides what differs
(see the README, "Tasks").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgecompress.errors import EdgeCompressError
from edgecompress.inputs import call, concat, take
from edgecompress.tasks.distill import KD_MODES, Hints
from edgecompress.tasks.metrics import Metric


@dataclass(frozen=True, kw_only=True)
class FinetuneSettings:
    """Fine-tuning of a compressed student with the uncompressed teacher.

    ``kd_weight`` weighs the term that learns the teacher's outputs, ``1 - kd_weight`` the true
    targets. In classification, ``kd_mode`` "soft" learns the teacher's softened distribution
    (``temperature``), "hard" its predicted labels; other tasks define their own term
    (``SupervisedTask.distillation_loss``; regression: the squared error to the teacher's
    outputs).
    ``hint_weight`` > 0 adds hint distillation: the student's stage outputs learn the teacher's
    (see ``edgecompress.tasks.distill.hint_pairs``).
    """

    epochs: int = 10
    lr: float = 2e-3
    temperature: float = 4.0
    kd_weight: float = 0.7
    kd_mode: str = "soft"
    hint_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.lr <= 0 or self.temperature <= 0:
            raise ValueError(f"FinetuneSettings needs epochs >= 0, lr > 0, temperature > 0: {self}")
        if not 0.0 <= self.kd_weight <= 1.0:
            raise ValueError(f"FinetuneSettings.kd_weight must lie in [0, 1], got {self.kd_weight}")
        if self.kd_mode not in KD_MODES:
            raise ValueError(
                f"FinetuneSettings.kd_mode must be one of {KD_MODES}, got {self.kd_mode!r}"
            )
        if not 0.0 <= self.hint_weight < math.inf:
            raise ValueError(
                f"FinetuneSettings.hint_weight must be a finite number >= 0 (0: no hints), "
                f"got {self.hint_weight}"
            )


@dataclass(frozen=True)
class _Objective:
    """One batch's loss: distillation from the teacher's outputs, hints, the penalty."""

    task: SupervisedTask
    settings: FinetuneSettings
    teacher: nn.Module
    cached_outputs: torch.Tensor | None
    hint: Callable[[], torch.Tensor] | None
    penalty: Callable[[nn.Module], torch.Tensor] | None

    def __call__(self, student: nn.Module, x: Any, y: Any, idx: Any) -> torch.Tensor:
        s = self.settings
        t_outputs = self._teacher_outputs(x, idx)
        loss = self.task.distillation_loss(call(student, x), t_outputs, y, s)
        if self.hint is not None:
            loss = loss + s.hint_weight * self.hint()
        if self.penalty is not None:
            loss = loss + self.penalty(student)
        return loss

    def _teacher_outputs(self, x: Any, idx: Any) -> torch.Tensor:
        """Cached outputs where there are; the teacher still runs when hints need its features."""
        if self.cached_outputs is not None and self.hint is None:
            return self.cached_outputs[idx]
        with torch.no_grad():
            outputs = call(self.teacher, x)
        return outputs if self.cached_outputs is None else self.cached_outputs[idx]


class _Indexed(Dataset):
    """Yields (x, y, index) so that teacher outputs computed once can be looked up per sample."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[Any, Any, int]:
        x, y = self.base[i]
        return x, y, i


@dataclass(frozen=True, kw_only=True)
class SupervisedTask:
    """Loaders yield ``(inputs, targets)``. ``val`` selects models; ``test`` is only reported.

    ``metric`` names the metric the study optimises among the task's ``metrics`` (``None``: the
    first); every metric is recorded for every trial. A subclass sets ``metrics`` and overrides
    ``loss`` (and, where the defaults do not fit its outputs, ``distillation_loss``,
    ``divergence``, ``targets``, ``check_outputs``, ``check_targets``).
    """

    metrics: ClassVar[tuple[Metric, ...]] = ()
    # the FinetuneSettings fields distillation_loss reads: the space searches only these
    distillation_reads: ClassVar[tuple[str, ...]] = ("kd_weight", "hint_weight")

    train: DataLoader
    val: DataLoader
    test: DataLoader | None = None
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    calibration_samples: int = 512  # the most a plan's method.calibration_samples takes
    metric: str | None = None
    _arrays: dict[str, tuple[Any, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self.metrics:
            raise TypeError(
                f"{type(self).__name__} defines no metrics: a SupervisedTask subclass sets "
                "metrics = (Metric(...), ...), the first being the default."
            )
        if self.metric is not None and self.metric not in self.metric_names:
            raise ValueError(
                f"{type(self).__name__}(metric={self.metric!r}): this task scores "
                f"{', '.join(self.metric_names)}; choose one of them."
            )

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    @property
    def objective(self) -> Metric:
        """The metric the study optimises (``metric``, or the task's first)."""
        name = self.metric or self.metrics[0].name
        return next(m for m in self.metrics if m.name == name)

    def with_metric(self, name: str) -> SupervisedTask:
        """This task optimising ``name`` (a ``ValueError`` names the task's metrics)."""
        return replace(self, metric=name)

    # -- the contract: what a task defines -------------------------------------------------

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss of ``outputs`` against the true ``targets`` (a batch)."""
        raise NotImplementedError(f"{type(self).__name__} must define loss(outputs, targets)")

    def distillation_loss(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        targets: torch.Tensor,
        settings: FinetuneSettings,
    ) -> torch.Tensor:
        """What a student is fine-tuned with: by default ``kd_weight`` x the mean squared error
        to the teacher's outputs + ``1 - kd_weight`` x ``loss`` on the true targets."""
        w = settings.kd_weight
        return w * F.mse_loss(student, teacher) + (1.0 - w) * self.loss(student, targets)

    def divergence(self, teacher: np.ndarray, student: np.ndarray) -> float:
        """How far an untrained compressed model's outputs are from the teacher's (the
        sensitivity profile ranks layers by it; smaller is better): by default the mean squared
        difference relative to the variance of the teacher's outputs."""
        t, s = teacher.astype(np.float64), student.astype(np.float64)
        scale = float(t.var()) or 1.0
        value = float(np.mean((s - t) ** 2)) / scale
        return value if np.isfinite(value) else float("inf")

    def targets(self, y: np.ndarray) -> np.ndarray:
        """The split's targets as scored (the concatenated loader targets, as numpy)."""
        return y

    def check_outputs(self, outputs: Any) -> str | None:
        """Why the model's outputs on the example input do not fit this task (None: they
        do): a plain-language reason, shown before any work."""
        if not isinstance(outputs, torch.Tensor):
            return f"the model returns a {type(outputs).__name__}; this task needs one tensor"
        return None

    def check_targets(self, outputs: torch.Tensor, targets: torch.Tensor) -> str | None:
        """Why a validation batch's targets do not fit the model's outputs (None: they do)."""
        if len(targets) != len(outputs):
            return f"{len(targets)} targets for a batch of {len(outputs)} inputs"
        return None

    def evaluate(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """Every metric of the task: ``{name: value, name_se: standard error}``."""
        scores: dict[str, float] = {}
        for m in self.metrics:
            value, se = m.score(outputs, targets)
            scores[m.name], scores[f"{m.name}_se"] = float(value), float(se)
        return scores

    # -- data and the fine-tune loop, shared by every task ---------------------------------

    def arrays(self, split: str) -> tuple[Any, np.ndarray]:
        """The whole split as inputs, in the loaders' form (an array, a tuple or a dict of
        arrays: see ``edgecompress.inputs``; float32, or integers as given: token ids), and its
        targets (``targets``; cached), for ONNX Runtime."""
        if split not in self._arrays:
            loader = {"train": self.train, "val": self.val, "test": self.test}[split]
            if loader is None:
                raise ValueError(f"this task has no {split!r} split")
            if hasattr(loader.dataset, "__len__"):  # a fixed order, whatever the loader shuffles
                loader = DataLoader(
                    loader.dataset, batch_size=256, shuffle=False, collate_fn=loader.collate_fn
                )
            batches = [(x, y) for x, y in loader]
            if not batches:
                raise EdgeCompressError(f"the task's {split!r} split is empty: give it data.")
            xs, ys = zip(*batches, strict=True)
            try:
                inputs = concat(xs)
                targets = self.targets(torch.cat([torch.as_tensor(y) for y in ys]).numpy())
            except (ValueError, RuntimeError) as exc:  # batches of different shapes
                raise EdgeCompressError(
                    f"the task's {split!r} split has batches of different shapes past the batch "
                    f"dimension ({str(exc).splitlines()[0][:160]}): a split is kept as one "
                    "array, so pad every sample to one length (the exported model still takes "
                    "any size along Experiment.dynamic_axes)."
                ) from None
            self._arrays[split] = (inputs, targets)
        return self._arrays[split]

    def calibration_batches(self, batch_size: int = 32) -> Iterator[Any]:
        """The first ``calibration_samples`` training inputs (in the loaders' form), for static
        quantization (a plan's ``method.calibration_samples`` takes the first of these)."""
        x, y = self.arrays("train")
        end = min(len(y), self.calibration_samples)
        for start in range(0, end, batch_size):
            yield take(x, start, min(end, start + batch_size))

    def fit(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        settings: FinetuneSettings | None = None,
        seed: int = 0,
        gate: Callable[[], AbstractContextManager[Any]] = nullcontext,
        penalty: Callable[[nn.Module], torch.Tensor] | None = None,
    ) -> nn.Module:
        """Fine-tune ``student`` in place with ``teacher`` as distillation teacher.

        ``gate`` wraps every epoch (see ``CpuGate.work``) so that latency measurements on the same
        machine never overlap training. ``penalty(student)`` is added to the loss (e.g. an L1
        sparsity penalty). With ``hint_weight`` > 0 the student's stage outputs also learn the
        teacher's through adapters that are trained alongside and then dropped; the pairs are
        ``hint_pairs(student, teacher, <a training batch>)``.
        """
        s = settings or self.finetune
        if s.epochs == 0:
            return student.eval()
        torch.manual_seed(seed)
        with gate():
            hints = self._hints(student, teacher, s)
        loader, teacher_outputs = self._distillation_loader(teacher, seed, gate)
        adapters = hints.adapters if hints is not None else nn.ModuleList()
        optimizer = torch.optim.AdamW(
            [*student.parameters(), *adapters.parameters()], lr=s.lr, weight_decay=1e-4
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(  # cosine, stepped per epoch
            optimizer, lambda epoch: 0.5 * (1 + math.cos(math.pi * epoch / s.epochs))
        )
        with _watching(hints, student, teacher) as hint:
            objective = _Objective(
                task=self,
                settings=s,
                teacher=teacher,
                cached_outputs=teacher_outputs,
                hint=hint,
                penalty=penalty,
            )
            for _ in range(s.epochs):
                with gate():
                    student.train()
                    for x, y, idx in loader:
                        loss = objective(student, x, y, idx)
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()
                scheduler.step()
        return student.eval()

    def _hints(self, student: nn.Module, teacher: nn.Module, s: FinetuneSettings) -> Hints | None:
        """The hint pairs and fresh adapters when ``s.hint_weight`` > 0 (the first training batch
        shows the layers' output sizes)."""
        if s.hint_weight == 0:
            return None
        example, _ = next(iter(self.train))
        return Hints.between(student, teacher, example)

    def _distillation_loader(
        self, teacher: nn.Module, seed: int, gate: Callable[[], AbstractContextManager[Any]]
    ) -> tuple[Iterable[tuple[Any, Any, Any]], torch.Tensor | None]:
        """A shuffling loader over (x, y, index) and the teacher's outputs for every index.

        Map-style datasets get the teacher's outputs computed once; other datasets run the
        teacher on every batch.
        """
        base = self.train.dataset
        generator = torch.Generator().manual_seed(seed)
        if not hasattr(base, "__len__") or not hasattr(base, "__getitem__"):
            teacher.eval()
            return _OnTheFly(self.train), None
        batch = self.train.batch_size or 64
        indexed = _Indexed(base)
        with torch.no_grad(), gate():
            teacher.eval()
            ordered = DataLoader(indexed, batch_size=256, shuffle=False)
            outputs = torch.cat([call(teacher, x) for x, _, _ in ordered])
        loader = DataLoader(indexed, batch_size=batch, shuffle=True, generator=generator)
        return loader, outputs


class _OnTheFly:
    """Adapts a loader of (x, y) to (x, y, index) for datasets without random access."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[tuple[Any, Any, None]]:
        for x, y in self.loader:
            yield x, y, None


@contextmanager
def _watching(
    hints: Hints | None, student: nn.Module, teacher: nn.Module
) -> Iterator[Callable[[], torch.Tensor] | None]:
    """The hint loss of the latest forward passes while active (hooks removed on exit)."""
    if hints is None:
        yield None
        return
    with hints.watch(student, teacher) as hint:
        yield hint
