"""Plans at named points of a space: the uncompressed baseline, the all-int8 baseline, and each
knob a given share of the way from its identity to its fastest value."""

from __future__ import annotations

from typing import Any

import optuna

from edgecompress.plan import Plan
from edgecompress.spaces.base import Knob, Space
from edgecompress.spaces.precision import INT8


def baseline_params(space: Space, kind: str) -> dict[str, Any]:
    """The uncompressed teacher, or the teacher with every layer int8 (as Optuna params)."""
    params: dict[str, Any] = {}
    for k in space.knobs():
        if k.kind != "fixed" and k.identity is not None:
            int8 = (
                kind == "int8"
                and k.section == "bits"
                and (k.kind != "ordinal" or INT8 in k.choices)
            )
            params[k.name] = k.param(INT8) if int8 else k.param(k.identity)
    return params


def on_grid(knob: Knob, level: float) -> float | int:
    """The knob's value ``level`` of the way (0..1) from its identity to its fastest value,
    on its grid."""
    assert knob.identity is not None and knob.fastest is not None and knob.low is not None
    value = float(knob.identity) + level * (float(knob.fastest) - float(knob.identity))
    step = float(knob.step or (1 if knob.kind == "int" else 0.05))
    on_grid = round(float(knob.low) + round((value - float(knob.low)) / step) * step, 6)
    return int(on_grid) if knob.kind == "int" else on_grid


def replay(space: Space, params: dict[str, Any]) -> Plan:
    """The plan that ``space`` samples from the Optuna ``params`` (knob name -> parameter)."""
    return space.sample(optuna.trial.FixedTrial(params))  # type: ignore[arg-type]
