"""Knob and Space: what may vary, sampled with Optuna's suggest API into a Plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import optuna

from edgecompress.plan import Plan, Value

KINDS = ("float", "int", "ordinal", "choice", "fixed")


@dataclass(frozen=True, kw_only=True)
class Knob:
    """One searched (or fixed) plan entry.

    Kinds: ``float`` / ``int`` (``low``, ``high``, ``step``; or ``log`` for a float on a log
    scale), ``ordinal`` (ordered ``choices`` such as channel multiples 1, 4, 8, 16: the sampler
    sees an int index, so it knows their order; the plan holds the value), ``choice``
    (unordered ``choices``, e.g. a pruning criterion) and ``fixed`` (``value``). Ordered values
    are never sent as categorical choices. ``identity`` is the value that leaves the model as
    it is (no pruning, full precision), used to build the uncompressed baseline; ``fastest`` the
    value that compresses the most (for the estimate of the fastest reachable model).

    The sampled value is written to the plan under ``targets`` (several plan entries share one
    knob, e.g. all the groups of a stage), or under ``name`` when there are none.
    """

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple[Value, ...] = ()
    value: Value | None = None
    identity: Value | None = None
    fastest: Value | None = None
    layers: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"knob {self.name}: kind must be one of {KINDS}, not {self.kind!r}")
        if self.kind == "fixed" and self.value is None:
            raise ValueError(f"knob {self.name}: a fixed knob needs a value")
        if self.kind in ("ordinal", "choice") and len(self.choices) < 1:
            raise ValueError(f"knob {self.name}: an {self.kind} knob needs choices")
        if self.kind in ("float", "int") and not self._range_ok():
            raise ValueError(
                f"knob {self.name}: needs low <= high and a step (or log=True), got "
                f"low={self.low}, high={self.high}, step={self.step}, log={self.log}"
            )
        for value in (self.identity, self.fastest):
            if (
                value is not None
                and self.kind in ("ordinal", "choice")
                and (value not in self.choices)
            ):
                raise ValueError(f"knob {self.name}: {value!r} is not one of {self.choices}")

    def _range_ok(self) -> bool:
        if self.low is None or self.high is None or self.low > self.high:
            return False
        if self.log:
            return self.step is None and self.low > 0
        return self.step is not None

    def suggest(self, trial: optuna.Trial) -> Value:
        if self.kind == "fixed":
            assert self.value is not None
            return self.value
        if self.kind == "choice":
            picked = trial.suggest_categorical(self.name, list(self.choices))
            assert picked is not None
            return picked
        if self.kind == "ordinal":
            return self.choices[trial.suggest_int(self.name, 0, len(self.choices) - 1)]
        assert self.low is not None and self.high is not None
        if self.kind == "int":
            step = 1 if self.step is None else int(self.step)
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=step, log=self.log
            )
        step_f = None if self.step is None else float(self.step)
        value = trial.suggest_float(
            self.name, float(self.low), float(self.high), step=step_f, log=self.log
        )
        return float(f"{value:.6g}")

    def plan_keys(self) -> tuple[str, ...]:
        return self.targets or (self.name,)

    @property
    def section(self) -> str:
        """The plan section this knob writes (``prune`` for ``prune.conv1`` or a stage of it)."""
        return self.plan_keys()[0].split(".", 1)[0]

    def param(self, value: Value) -> Value:
        """The Optuna parameter that makes ``suggest`` return ``value`` (for enqueued trials)."""
        if self.kind == "ordinal":
            return self.choices.index(value)
        return value

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "layers": list(self.layers)}
        if self.targets:
            d["targets"] = list(self.targets)
        if self.kind == "fixed":
            d["value"] = self.value
        elif self.kind in ("ordinal", "choice"):
            d["choices"] = list(self.choices)
        else:
            d.update(low=self.low, high=self.high, step=self.step)
            if self.log:
                d["log"] = True
        return d


def check_choices(what: str, given: tuple[Value, ...], allowed: tuple[Value, ...]) -> None:
    """``given`` is a non-empty subset of ``allowed``, or a ``ValueError`` names the rest."""
    unknown = [g for g in given if g not in allowed]
    if unknown or not given:
        raise ValueError(f"{what} {unknown or list(given)}: choose among {allowed}")


def per_layer(
    section: str,
    layers: dict[str, tuple[str, ...]],
    *,
    low: float,
    high: float,
    step: float,
    identity: float,
    fastest: float | None = None,
) -> list[Knob]:
    """One float knob ``<section>.<name>`` for each entry of ``layers`` (name -> the layers it
    covers), all on one range."""
    return [
        Knob(
            name=f"{section}.{name}",
            kind="float",
            low=low,
            high=high,
            step=step,
            identity=identity,
            fastest=fastest,
            layers=covered,
        )
        for name, covered in layers.items()
    ]


@dataclass(frozen=True)
class Skipped:
    """A layer a technique leaves alone, and why (``technique`` empty: every technique)."""

    layer: str
    reason: str
    technique: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.layer,
            "kind": "skipped",
            "layers": [self.layer],
            "technique": self.technique or "all",
            "reason": self.reason,
        }


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
        entries = {}
        for knob in self.knob_list:
            value = knob.suggest(trial)
            entries.update({key: value for key in knob.plan_keys()})
        return Plan(entries)


def describe(space: Space) -> list[dict[str, Any]]:
    """The space as JSON-able knob descriptions; stored with the study to detect changes."""
    return [k.to_dict() for k in space.knobs()]
