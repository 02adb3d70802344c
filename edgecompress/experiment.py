"""Experiment: the frozen bundle of inputs, and loading one from ``FILE.py:NAME``.

Workers import the experiment file themselves, so models and data loaders never travel
through pickles: only the reference string and the Plan cross processes.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecompress.blocks import StudentFamily
from edgecompress.errors import EdgeCompressError
from edgecompress.inputs import InputSpec, call, describe, form_of
from edgecompress.targets import Target
from edgecompress.tasks import Metric, SupervisedTask

# the objectives besides the task's metric (which is always the first), all minimized
COSTS = ("latency_ms", "size_mb", "size_gz_mb")


@dataclass(frozen=True, kw_only=True)
class Experiment:
    """Inputs only.

    ``model`` returns the trained, uncompressed model (the teacher), a fresh instance per call.
    ``example_input`` is one batch the model accepts: a tensor, a tuple of tensors (positional
    arguments) or a dict of tensors (keyword arguments, e.g. token ids and an attention mask),
    batch dimension first; the batch dimension is replaced by the target's batch size for
    latency, and the task's loaders yield inputs of the same form (see ``edgecompress.inputs``).
    ``space`` is the search space: an ``AutoSpace(...)`` built from the model by introspection
    (``None``: ``AutoSpace()`` with every technique), or any
    ``Space``. ``exclude`` names layers an AutoSpace leaves alone. ``student`` is an optional
    ``StudentFamily``: smaller architectures ``build(width=..., depth=...)`` (e.g. the teacher's
    own class, narrower and shallower) a trial may distill the teacher into; ``validate()``
    builds its smallest and largest member and runs them on the example input.
    ``task`` is a ``SupervisedTask`` (``ClassificationTask``, ``RegressionTask`` or the user's
    own). A study optimises the task's metric (``task.metric``) and ``latency_ms``, and the
    sizes ``objectives`` adds (``("latency_ms", "size_mb")``; the metric may lead, by its name);
    ``study_objectives`` is the whole list.
    """

    name: str
    model: Callable[[], nn.Module]
    example_input: Any  # torch.Tensor | tuple[torch.Tensor, ...] | dict[str, torch.Tensor]
    task: SupervisedTask
    space: Any = None
    exclude: tuple[str, ...] = ()
    student: StudentFamily | None = None
    target: Target = field(default_factory=Target)
    objectives: tuple[str, ...] = ()
    # dimensions past the batch one the deployed model takes at any size, by input name:
    # {"input_ids": {1: "sequence"}}; latency is measured at the example's size
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    seed: int = 0
    ref: str | None = None  # "FILE.py:NAME" this experiment was loaded from, set by load_experiment

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise EdgeCompressError(
                f"Experiment.name {self.name!r} must be a non-empty word (letters, digits, - or _):"
                " it names the study."
            )
        if self.student is not None and not isinstance(self.student, StudentFamily):
            raise EdgeCompressError(
                f"Experiment.student must be an edgecompress.StudentFamily or None, got "
                f"{type(self.student).__name__}: StudentFamily(build=..., width=..., depth=...)"
            )
        if not isinstance(self.task, SupervisedTask):
            raise EdgeCompressError(
                f"Experiment.task must be an edgecompress task (ClassificationTask, "
                f"RegressionTask or a SupervisedTask subclass), got {type(self.task).__name__}."
            )
        metric = self.task.objective.name
        named = (
            self.objectives[:1] if self.objectives[:1] and self.objectives[0] not in COSTS else ()
        )
        costs = self.objectives[len(named) :]
        unknown = [o for o in costs if o not in COSTS]
        if named not in ((), (metric,)) or unknown or (costs and "latency_ms" not in costs):
            raise EdgeCompressError(
                f"Experiment.objectives {self.objectives!r}: the first must be the task's metric "
                f"{metric!r} (task.metric; this task scores {', '.join(self.task.metric_names)}),"
                f" then 'latency_ms' and optionally {', '.join(c for c in COSTS[1:])}; or leave "
                "the metric out (it is the task's)."
            )

    @property
    def study_objectives(self) -> tuple[str, ...]:
        """What a study of this experiment optimises: the task's metric, then ``latency_ms``
        and the sizes ``objectives`` names."""
        costs = tuple(o for o in self.objectives if o in COSTS)
        return (self.metric.name, *(costs or ("latency_ms",)))

    @property
    def metric(self) -> Metric:
        """The task's metric the study optimises (its first objective)."""
        return self.task.objective

    def with_metric(self, name: str) -> Experiment:
        """This experiment optimising the task's metric ``name`` instead (``--metric``)."""
        if name not in self.task.metric_names:
            raise EdgeCompressError(
                f"metric {name!r}: the task of experiment {self.name!r} "
                f"({type(self.task).__name__}) scores {', '.join(self.task.metric_names)}; "
                "choose one of them."
            )
        costs = tuple(o for o in self.objectives if o in COSTS)
        return replace(self, task=self.task.with_metric(name), objectives=costs)

    def with_runtime(self, runtime: str) -> Experiment:
        """This experiment with its target run by ``runtime`` instead (``--runtime``): its
        latency and metrics measured there."""
        from edgecompress.targets.target import RUNTIMES

        if runtime not in RUNTIMES:
            raise EdgeCompressError(f"--runtime {runtime!r}: choose among {sorted(RUNTIMES)}")
        device = RUNTIMES[runtime][0]
        return replace(
            self, target=replace(self.target, runtime=runtime, execution_provider=device)
        )

    @cached_property
    def inputs(self) -> InputSpec:
        """The model's inputs: their form, ONNX names (``forward``'s parameter names for a
        tuple, the keys of a dict, ``input`` for one tensor), dtypes and shapes."""
        plain = form_of(self.example_input) == "tensor" and not self.dynamic_axes
        model = nn.Identity() if plain else self.model()
        return InputSpec.of(model, self.example_input, self.dynamic_axes)

    def directions(self) -> list[str]:
        return [self.metric.direction, *("minimize" for _ in self.study_objectives[1:])]

    def validate(self) -> None:
        """Runs the model once on the example input; a rejected shape is a clear error."""
        try:
            model = self.model()
        except Exception as exc:  # noqa: BLE001 - the user's factory failed
            raise EdgeCompressError(
                f"Experiment {self.name!r}: model() failed ({type(exc).__name__}: {exc}). It must "
                "return the trained model; check the weights file or code it loads."
            ) from None
        if not isinstance(model, nn.Module):
            raise EdgeCompressError(
                f"Experiment {self.name!r}: model() returned {type(model).__name__}, expected a "
                "torch.nn.Module (the trained model to compress)."
            )
        self.__dict__["inputs"] = InputSpec.of(model, self.example_input)  # checks the form
        try:
            with torch.no_grad():
                out = call(model.eval(), self.example_input)
        except Exception as exc:  # noqa: BLE001 - any failure here is the user's shape
            raise EdgeCompressError(
                f"Experiment {self.name!r}: the model rejects the example input "
                f"({describe(self.example_input)}): {type(exc).__name__}: {exc}. Give "
                "example_input one batch the model accepts, batch dimension first: a tensor, a "
                "tuple of tensors (positional arguments) or a dict of tensors (keyword "
                "arguments); token ids as torch.int64."
            ) from None
        if self.dynamic_axes:  # checked, and the model run at another size along them
            self.__dict__["inputs"] = InputSpec.of(model, self.example_input, self.dynamic_axes)
        wrong = self.task.check_outputs(out)
        if wrong is not None:
            raise EdgeCompressError(
                f"Experiment {self.name!r} ({type(self.task).__name__}): {wrong}. Use the task "
                "that matches the model's outputs (ClassificationTask, RegressionTask or your "
                "own SupervisedTask)."
            )
        self._check_student(tuple(out.shape))
        self._check_data(model)

    def _check_data(self, model: nn.Module) -> None:
        """One batch of the validation split has the example's form, inputs, dtypes
        (integers exactly: token ids; floating point any, fed as float32) and shapes past the
        batch dimension, and targets that fit the model's outputs on it, before any work."""
        loader = getattr(self.task, "val", None)
        if loader is None:
            return
        try:
            x, y = next(iter(loader))[:2]
        except Exception:  # noqa: BLE001 - the task's own check reports its data
            return
        where = f"Experiment {self.name!r}: the task's validation split"
        self.inputs.check(x, where)
        try:
            with torch.no_grad():
                out = call(model.eval(), x)
        except Exception as exc:  # noqa: BLE001 - the data the model rejects
            raise EdgeCompressError(
                f"{where}: the model rejects its first batch ({type(exc).__name__}: {exc})."
            ) from None
        wrong = self.task.check_targets(out, torch.as_tensor(y))
        if wrong is not None:
            raise EdgeCompressError(f"{where}: {wrong}.")

    def _check_student(self, shape: tuple[int, ...]) -> None:
        """The smallest and largest student of the family build and give the teacher's shape."""
        if self.student is None:
            return
        for width, depth in (self.student.smallest, self.student.largest):
            member = f"student.build(width={width}, depth={depth})"
            try:
                with torch.no_grad():
                    out = call(
                        self.student.build(width=width, depth=depth).eval(), self.example_input
                    )
            except Exception as exc:  # noqa: BLE001 - the user's family failed
                raise EdgeCompressError(
                    f"Experiment {self.name!r}: {member} failed on the example input "
                    f"({type(exc).__name__}: {exc}). Each member of StudentFamily(width=..., "
                    "depth=...) must build and accept the teacher's input; fix build or "
                    "narrow the ranges."
                ) from None
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            if got != shape:
                raise EdgeCompressError(
                    f"Experiment {self.name!r}: {member} returns {got}, the teacher {shape}. "
                    "A student must give the teacher's output shape (the same outputs)."
                )


def load_experiment(ref: str) -> Experiment:
    """Import ``FILE.py:NAME`` (a file) or ``package.module:NAME`` (an importable module, such
    as the built-in ``edgecompress.examples.mnist1d:experiment``) and return the Experiment it
    names (refusing anything else)."""
    path_text, sep, name = ref.rpartition(":")
    module_form = bool(path_text) and all(p.isidentifier() for p in path_text.split("."))
    if not sep or not name or not (path_text.endswith(".py") or module_form):
        raise EdgeCompressError(
            f"experiment {ref!r}: expected FILE.py:NAME or package.module:NAME, e.g. "
            "examples/mnist1d.py:experiment or edgecompress.examples.mnist1d:experiment"
        )
    if path_text.endswith(".py"):
        path = Path(path_text).resolve()
        if not path.is_file():
            raise EdgeCompressError(f"experiment {ref!r}: no file {path}. Check the path.")
        module, where, kept = _import_file(path, ref), path.name, f"{path}:{name}"
    else:
        module, where, kept = _import_module(path_text, ref), path_text, ref
    if not hasattr(module, name):
        found = [k for k, v in vars(module).items() if isinstance(v, Experiment)]
        raise EdgeCompressError(
            f"experiment {ref!r}: {where} defines no {name!r}. "
            + (
                f"Experiments it defines: {', '.join(found)}."
                if found
                else "It defines no Experiment; create one with edgecompress.Experiment(...)."
            )
        )
    value = getattr(module, name)
    if callable(value) and not isinstance(value, Experiment):
        try:
            value = value()
        except Exception as exc:  # noqa: BLE001 - the user's factory failed
            raise EdgeCompressError(
                f"experiment {ref!r}: calling {name}() failed ({type(exc).__name__}: {exc})."
            ) from None
    if not isinstance(value, Experiment):
        raise EdgeCompressError(
            f"experiment {ref!r}: {name} is a {type(value).__name__}, not an "
            "edgecompress.Experiment (nor a function returning one)."
        )
    return replace(value, ref=kept)


def _import_module(dotted: str, ref: str) -> Any:
    """The module ``dotted`` (``package.module``), imported as Python imports it."""
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError as exc:
        if exc.name is not None and dotted.startswith(exc.name):  # the module itself is missing
            raise EdgeCompressError(
                f"experiment {ref!r}: no module named {exc.name!r}. Check the name, or give "
                "the file as FILE.py:NAME."
            ) from None
        raise EdgeCompressError(  # the module imports something that is not installed
            f"experiment {ref!r}: importing {dotted} failed ({type(exc).__name__}: {exc})."
        ) from None
    except Exception as exc:  # noqa: BLE001 - report the user's import error
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        raise EdgeCompressError(f"experiment {ref!r}: importing {dotted} failed: {last}") from None


def _import_file(path: Path, ref: str) -> Any:
    module_name = "edgecompress_user_" + "".join(c if c.isalnum() else "_" for c in str(path))
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise EdgeCompressError(f"experiment {ref!r}: {path} cannot be imported as Python.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - report the user's import error in full
        del sys.modules[module_name]
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        raise EdgeCompressError(
            f"experiment {ref!r}: importing {path.name} failed: {last}. Fix the file so that "
            f"`python {path_text_of(path)}` imports cleanly."
        ) from exc
    return module


def path_text_of(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
