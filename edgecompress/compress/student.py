"""Students: smaller architectures the teacher is distilled into.

Plan entries read here (``student.*``):

- derived from the teacher, per stage of ``edgecompress.blocks.find_stages``:
  ``student.depth.<stage>`` (int, 1..units: the units kept, evenly spaced over the stage and
  always the first, as DistilBERT keeps every other layer; a dropped unit's children become
  ``PassThrough()``, an identity, so every kept layer keeps its name and teacher weights) and
  ``student.width.<stage>`` (float in (0, 1]: the share of output channels of each kept unit's
  first prunable layer that is kept, by L1 channel pruning of the teacher's weights);
- a family the user supplies (``StudentFamily``): ``student.family`` (``"teacher"``: no
  student, ``"family"``: ``build(width=student.width, depth=student.depth)``, freshly
  initialized under the seed; width and depth default to the largest member). With
  ``"family"`` the per-stage entries are not read; with ``"teacher"``, ``student.width`` and
  ``student.depth`` are not read (a search samples them either way).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from edgecompress.blocks import PassThrough, Stage, StudentFamily, find_stages
from edgecompress.compress.candidate import Report
from edgecompress.compress.prune import ChannelPruner
from edgecompress.inputs import call
from edgecompress.modules import WEIGHT_LAYERS
from edgecompress.plan import InvalidPlan, Plan, Value

FAMILY_CHOICES = ("teacher", "family")
LAYER_SECTIONS = ("prune", "sparsity", "rank", "bits")


class StudentBuilder:
    """``apply(teacher, plan)``: the plan's student, a new model; the teacher is never changed.

    Its report: ``student``, what was built (``"derived"`` from the teacher, or a member of the
    ``"family"``), and ``dropped_layers``, the teacher's weight layers the student does not
    have; empty when the plan builds no student (an unchanged copy of the teacher).
    """

    def __init__(
        self, example_input: Any, *, family: StudentFamily | None = None, seed: int = 0
    ) -> None:
        self.example_input = example_input
        self.family = family
        self.seed = seed

    def apply(self, teacher: nn.Module, plan: Plan) -> tuple[nn.Module, Report]:
        entries = plan.section("student")
        _check_keys(entries)
        model = copy.deepcopy(teacher).eval()
        if entries.get("family", "teacher") == "family":
            return self._family(model, entries)
        depths, widths = _per_stage(entries)
        if not depths and not widths:
            return model, {}
        return self._derived(model, depths, widths)

    def _derived(
        self, model: nn.Module, depths: dict[str, int], widths: dict[str, float]
    ) -> tuple[nn.Module, Report]:
        stages = {s.name: s for s in find_stages(model, self.example_input)}
        unknown = sorted((set(depths) | set(widths)) - set(stages))
        if unknown:
            known = {s.name: len(s.units) for s in stages.values()}
            raise InvalidPlan(
                f"student: the model has no stages {unknown}; its stages (units) are {known}"
            )
        expected = _output_shape(model, self.example_input)
        ratios: dict[str, Value] = {}
        dropped: list[str] = []
        for name, stage in stages.items():
            kept = _kept(stage, depths.get(name, len(stage.units)))
            dropped += _drop(model, stage, kept)
            ratios.update(_narrow(stage, kept, widths.get(name, 1.0)))
        if ratios:
            model, _ = ChannelPruner(self.example_input).apply(model, Plan(ratios))
        _check_output(model, self.example_input, expected, "the derived student")
        if not dropped and not ratios:
            return model, {}
        return model, _report("derived", dropped)

    def _family(self, teacher: nn.Module, entries: dict[str, Value]) -> tuple[nn.Module, Report]:
        if self.family is None:
            raise InvalidPlan(
                "student.family = 'family' needs a student family: give the experiment "
                "student=StudentFamily(build=..., width=..., depth=...), or set "
                "student.family = 'teacher'"
            )
        width, depth = _member(self.family, entries)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            try:
                student = self.family.build(width=width, depth=depth)
            except Exception as exc:  # noqa: BLE001 - the user's family failed on this member
                raise InvalidPlan(
                    f"student: the family's build(width={width}, depth={depth}) failed "
                    f"({type(exc).__name__}: {exc})"
                ) from None
        expected = _output_shape(teacher, self.example_input)
        _check_output(student, self.example_input, expected, f"build(width={width}, depth={depth})")
        mine = {n for n, m in student.named_modules() if isinstance(m, WEIGHT_LAYERS)}
        theirs = [n for n, m in teacher.named_modules() if isinstance(m, WEIGHT_LAYERS)]
        return student.eval(), _report("family", [n for n in theirs if n not in mine])


def _report(built: str, dropped: list[str]) -> Report:
    return {"student": built, **({"dropped_layers": dropped} if dropped else {})}


def _check_keys(entries: dict[str, Value]) -> None:
    fixed = {"family", "width", "depth"}
    unknown = sorted(
        k for k in entries if k not in fixed and not k.startswith(("depth.", "width."))
    )
    if unknown:
        raise InvalidPlan(
            f"student: unknown entries {['student.' + k for k in unknown]}; known: "
            "student.family, student.width, student.depth, student.depth.<stage>, "
            "student.width.<stage>"
        )
    family = entries.get("family", "teacher")
    if family not in FAMILY_CHOICES:
        raise InvalidPlan(f"student.family {family!r}: choose one of {FAMILY_CHOICES}")
    if "family" not in entries and ({"width", "depth"} & set(entries)):
        raise InvalidPlan(
            "student.width and student.depth choose a member of a student family: add "
            "student.family = 'family' (or name a stage: student.width.<stage>)"
        )


def _per_stage(entries: dict[str, Value]) -> tuple[dict[str, int], dict[str, float]]:
    depths, widths = {}, {}
    for key, value in entries.items():
        kind, _, stage = key.partition(".")
        if kind == "depth" and stage:
            depths[stage] = _integer(f"student.{key}", value, 1, None)
        elif kind == "width" and stage:
            widths[stage] = _share(f"student.{key}", value)
    return depths, widths


def _integer(key: str, value: Value, low: int, high: int | None) -> int:
    upper = "" if high is None else f" and <= {high}"
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidPlan(f"{key} must be an integer >= {low}{upper}, got {value!r}")
    if high is not None and value > high:
        raise InvalidPlan(f"{key} must be an integer >= {low}{upper}, got {value!r}")
    return value


def _share(key: str, value: Value) -> float:
    if isinstance(value, (bool, str)) or not 0.0 < value <= 1.0:
        raise InvalidPlan(
            f"{key} must be a number in (0, 1], the share of channels kept, got {value!r}"
        )
    return float(value)


def _member(family: StudentFamily, entries: dict[str, Value]) -> tuple[float, int]:
    width = entries.get("width", family.width[1])
    low, high = family.width
    if isinstance(width, (bool, str)) or not low <= width <= high:
        raise InvalidPlan(f"student.width must be a number in [{low}, {high}], got {width!r}")
    depth = _integer("student.depth", entries.get("depth", family.depth[1]), *family.depth)
    return float(width), depth


def kept_units(units: int, depth: int) -> list[int]:
    """``depth`` of ``units`` indices, evenly spaced and always the first: 6, 3 -> 0, 2, 4."""
    return [i * units // depth for i in range(depth)]


def _kept(stage: Stage, depth: int) -> list[int]:
    units = len(stage.units)
    if depth > units:
        raise InvalidPlan(
            f"student.depth.{stage.name} = {depth}: the stage has {units} units; choose 1..{units}"
        )
    return kept_units(units, depth)


def _drop(model: nn.Module, stage: Stage, kept: list[int]) -> list[str]:
    """Replaces every child of the units not ``kept`` by an identity; their weight layers."""
    dropped: list[str] = []
    for i, unit in enumerate(stage.units):
        if i in kept:
            continue
        for name in unit.names:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, PassThrough())
        dropped += unit.layers
    return dropped


def _narrow(stage: Stage, kept: list[int], width: float) -> dict[str, Value]:
    """``prune.<root>`` = 1 - width for the kept units (none at width 1)."""
    if width >= 1.0:
        return {}
    roots = [stage.units[i].root for i in kept]
    if None in roots:
        raise InvalidPlan(
            f"student.width.{stage.name}: its units have no layer whose channels can be "
            "pruned (attention reads its weights itself); use 1.0"
        )
    return {f"prune.{root}": round(1.0 - width, 6) for root in roots}


def _output_shape(model: nn.Module, x: Any) -> Any:
    with torch.no_grad():
        out = call(model.eval(), x)
    return tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__


def _check_output(model: nn.Module, x: Any, expected: Any, what: str) -> None:
    try:
        got = _output_shape(model, x)
    except Exception as exc:  # noqa: BLE001 - a student that cannot run is an invalid plan
        raise InvalidPlan(f"student: {what} rejects the example input ({exc})") from None
    if got != expected:
        raise InvalidPlan(f"student: {what} returns {got}, the teacher {expected}")


def drop_missing(
    plan: Plan, model: nn.Module, *, teacher: nn.Module | None = None
) -> tuple[Plan, list[str]]:
    """``plan`` without the ``prune.*``, ``sparsity.*``, ``rank.*`` and ``bits.*`` entries that
    do not apply to ``model``, a student; and the keys removed. An entry is removed when its
    layer is absent or an identity (dropped by depth), when it is of another kind than the
    ``teacher``'s layer of that name (a family member that merely shares the name), or when it
    prunes the student's output layer (its channels are the model's outputs)."""
    modules = dict(model.named_modules())
    theirs = dict(teacher.named_modules()) if teacher is not None else modules
    weights = [n for n, m in modules.items() if isinstance(m, WEIGHT_LAYERS)]
    output = weights[-1] if weights else ""

    def applies(section: str, layer: str) -> bool:
        mine = modules.get(layer)
        if mine is None or isinstance(mine, nn.Identity):
            return False
        if layer in theirs and type(theirs[layer]) is not type(mine):
            return False
        return not (section == "prune" and layer == output)

    gone = sorted(
        key
        for key in plan
        if key.split(".", 1)[0] in LAYER_SECTIONS and not applies(*key.split(".", 1))
    )
    return Plan({k: v for k, v in plan.items() if k not in gone}), gone
