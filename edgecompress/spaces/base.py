"""Knob and Space: what may vary, sampled with Optuna's suggest API into a Plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import optuna

from edgecompress.plan import Plan, Value


@dataclass(frozen=True, kw_only=True)
class Knob:
    """One searched (or fixed) plan entry.

    Ordered knobs are ints or floats with a step, never categorical indices, so the sampler
    sees their order. ``identity`` is the value that leaves the model as it is (no pruning,
    full precision), used to build the uncompressed baseline.
    """

    name: str
    kind: str  # "float" | "int" | "fixed"
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    value: Value | None = None
    identity: Value | None = None
    layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("float", "int", "fixed"):
            raise ValueError(f"knob {self.name}: kind must be float, int or fixed, not {self.kind}")
        if self.kind == "fixed":
            if self.value is None:
                raise ValueError(f"knob {self.name}: a fixed knob needs a value")
        elif self.low is None or self.high is None or self.step is None or self.low > self.high:
            raise ValueError(
                f"knob {self.name}: needs low <= high and a step, got "
                f"low={self.low}, high={self.high}, step={self.step}"
            )

    def suggest(self, trial: optuna.Trial) -> Value:
        if self.kind == "fixed":
            assert self.value is not None
            return self.value
        assert self.low is not None and self.high is not None and self.step is not None
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step))
        value = trial.suggest_float(
            self.name, float(self.low), float(self.high), step=float(self.step)
        )
        return round(value, 6)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "layers": list(self.layers)}
        if self.kind == "fixed":
            d["value"] = self.value
        else:
            d.update(low=self.low, high=self.high, step=self.step)
        return d


@dataclass(frozen=True)
class Skipped:
    """A layer the space leaves alone, and why."""

    layer: str
    reason: str


@runtime_checkable
class Space(Protocol):
    def knobs(self) -> list[Knob]: ...

    def sample(self, trial: optuna.Trial) -> Plan: ...


@dataclass(frozen=True)
class KnobSpace:
    """A space that is a list of independent knobs."""

    knob_list: tuple[Knob, ...] = ()
    skipped: tuple[Skipped, ...] = field(default=())

    def knobs(self) -> list[Knob]:
        return list(self.knob_list)

    def sample(self, trial: optuna.Trial) -> Plan:
        return Plan({k.name: k.suggest(trial) for k in self.knob_list})


def describe(space: Space) -> list[dict[str, Any]]:
    """The space as JSON-able knob descriptions; stored with the study to detect changes."""
    return [k.to_dict() for k in space.knobs()]
