"""Joint: several spaces sampled into one plan (knob names must not collide)."""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from edgecompress.plan import Plan
from edgecompress.spaces.base import Knob, Skipped, Space


@dataclass(frozen=True)
class Joint:
    spaces: tuple[Space, ...]

    def __init__(self, *spaces: Space) -> None:
        object.__setattr__(self, "spaces", tuple(spaces))
        names = [k.name for s in spaces for k in s.knobs()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"Joint: several spaces define the same knobs: {dupes}")
        keys = [key for s in spaces for k in s.knobs() for key in k.plan_keys()]
        twice = sorted({n for n in keys if keys.count(n) > 1})
        if twice:
            raise ValueError(f"Joint: several knobs write the same plan entries: {twice}")

    def knobs(self) -> list[Knob]:
        return [k for s in self.spaces for k in s.knobs()]

    @property
    def skipped(self) -> list[Skipped]:
        return [x for s in self.spaces for x in getattr(s, "skipped", ())]

    def sample(self, trial: optuna.Trial) -> Plan:
        values: dict = {}
        for space in self.spaces:
            values.update(space.sample(trial).to_dict())
        return Plan(values)
