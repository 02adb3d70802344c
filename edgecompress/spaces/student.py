"""Student knobs: the depth and width of a student derived from the teacher, per stage; or a
member of a student family the user supplies."""

from __future__ import annotations

import math

from edgecompress.blocks import Stage, StudentFamily
from edgecompress.spaces.base import Knob, KnobSpace, Skipped

FAMILY_STEP = 0.05  # the grid of student.width for a family


def derived_student_space(
    stages: list[Stage],
    *,
    min_width: float = 0.25,
    width_step: float = 0.05,
    exclude: tuple[str, ...] = (),
) -> KnobSpace:
    """Per stage (``edgecompress.blocks.find_stages``): ``student.depth.<stage>``, the units
    kept (1..units; a stage of one unit has no depth knob, it can only be kept) and
    ``student.width.<stage>``, the share of channels each kept unit keeps (``min_width``..1 by
    ``width_step``; none for stages with no prunable layer, e.g. attention alone). Identity:
    every unit at full width; fastest: one unit at ``min_width``. A stage holding a layer of
    ``exclude`` gets no knobs (reported as skipped)."""
    _check_grid("min_width", min_width, 1.0, width_step)
    knobs = []
    skipped = []
    for stage in stages:
        excluded = [layer for layer in stage.layers if layer in exclude]
        if excluded:
            reason = f"excluded by the experiment: {stage.name} keeps every unit at full width"
            skipped += [Skipped(layer, reason, "student") for layer in excluded]
            continue
        units = len(stage.units)
        if units > 1:
            knobs.append(
                Knob(
                    name=f"student.depth.{stage.name}",
                    kind="int",
                    low=1,
                    high=units,
                    step=1,
                    identity=units,
                    fastest=1,
                    layers=stage.layers,
                )
            )
        if all(unit.root is not None for unit in stage.units):
            knobs.append(_width(f"student.width.{stage.name}", min_width, 1.0, width_step, stage))
    return KnobSpace(tuple(knobs), tuple(skipped))


def _width(name: str, low: float, high: float, step: float, stage: Stage | None) -> Knob:
    return Knob(
        name=name,
        kind="float",
        low=low,
        high=high,
        step=step,
        identity=high,
        fastest=low,
        layers=stage.layers if stage is not None else (),
    )


def family_space(family: StudentFamily) -> KnobSpace:
    """``student.family`` ("teacher": no student, the identity; "family": a member),
    ``student.width`` (the family's width range by 0.05) and ``student.depth`` (its depth
    range); width and depth have the largest member as identity, the smallest as fastest."""
    low, high = family.width
    _check_grid("StudentFamily.width low", low, high, FAMILY_STEP)
    kind = Knob(
        name="student.family",
        kind="choice",
        choices=("teacher", "family"),
        identity="teacher",
        fastest="family",
    )
    depth = Knob(
        name="student.depth",
        kind="int",
        low=family.depth[0],
        high=family.depth[1],
        step=1,
        identity=family.depth[1],
        fastest=family.depth[0],
    )
    return KnobSpace((kind, _width("student.width", low, high, FAMILY_STEP, None), depth))


def _check_grid(what: str, low: float, high: float, step: float) -> None:
    if not step > 0:
        raise ValueError(f"the width step must be > 0, got {step}")
    if not 0 < low <= high:
        raise ValueError(f"{what}={low} must lie in (0, {high}]")
    steps = (high - low) / step
    if abs(steps - round(steps)) > 1e-9:
        nearer = round(high - math.floor(steps) * step, 6)
        raise ValueError(
            f"{what}={low} is not a whole number of steps of {step} below {high}, so {high} "
            f"could never be sampled; use e.g. {nearer}"
        )
