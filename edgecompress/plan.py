"""Plan: one trial's choices, flat and JSON. The only thing that crosses processes.

Keys are dotted ``<section>.<name>``: per layer (or channel group) ``prune.<group>`` (fraction
of output channels removed), ``sparsity.<layer>`` (fraction of weights zeroed), ``rank.<layer>``
(share of multiply-adds kept by a low-rank factorization), ``bits.<layer>`` (8 or 32); and
settings ``finetune.<setting>`` and ``method.<setting>`` (how a technique runs, e.g.
``method.prune_criterion``). Values are JSON scalars. A plan is immutable and has a
content hash (``key``) so that two trials with the same choices are recognisably the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

Value = int | float | str | bool
SECTIONS = ("prune", "sparsity", "rank", "bits", "student", "finetune", "method")
# values of the quantization settings, shared by the spaces that offer them and the compressors
QUANT_METHODS = ("static", "dynamic", "qat")
CALIBRATIONS = ("minmax", "entropy", "percentile")
ROUNDINGS = ("nearest", "stochastic")


class InvalidPlan(ValueError):
    """A plan that cannot be built (recorded on the trial as a failure, never a crash)."""


@dataclass(frozen=True)
class Plan(Mapping[str, Value]):
    entries: Mapping[str, Value] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in self.entries.items():
            _check_entry(name, value)
        frozen = MappingProxyType(dict(sorted(self.entries.items())))
        object.__setattr__(self, "entries", frozen)

    def __getitem__(self, name: str) -> Value:
        return self.entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def section(self, prefix: str) -> dict[str, Value]:
        """The entries under ``prefix.``, keyed by the rest of the name: ``{"conv2": 0.5}``."""
        start = prefix + "."
        return {k[len(start) :]: v for k, v in self.entries.items() if k.startswith(start)}

    def numbers(self, prefix: str) -> dict[str, float]:
        """``section(prefix)`` as floats; a value that is not a number is an ``InvalidPlan``."""
        entries = self.section(prefix)
        bad = {k: v for k, v in entries.items() if isinstance(v, (bool, str))}
        if bad:
            raise InvalidPlan(f"{prefix}: values must be numbers, got {bad}")
        return {k: float(v) for k, v in entries.items()}

    def to_dict(self) -> dict[str, Value]:
        return dict(self.entries)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        if not isinstance(data, Mapping):
            raise InvalidPlan(f"a plan must be a JSON object, got {type(data).__name__}")
        return cls(dict(data))

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))

    @property
    def key(self) -> str:
        """Content hash of the plan (16 hex digits)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def __hash__(self) -> int:
        return hash(self.to_json())


def _check_entry(name: object, value: object) -> None:
    if not isinstance(name, str) or "." not in name:
        raise InvalidPlan(f"plan key {name!r} must be '<section>.<name>', e.g. 'prune.conv2'")
    section = name.split(".", 1)[0]
    if section not in SECTIONS:
        raise InvalidPlan(f"plan key {name!r}: unknown section {section!r}; known: {SECTIONS}")
    if not isinstance(value, (int, float, str, bool)):
        raise InvalidPlan(f"plan value for {name!r} must be a JSON scalar, got {value!r}")
