"""A study's settings (``StudyMeta``): one frozen type, read from the study and written to it
here and nowhere else.

They live in the study's user attribute ``edgecompress`` as a JSON object, so that every driver,
worker and ``export`` on any machine reads the same settings from the storage. Settings a later
version adds, unknown to this one, are kept as they are through a rewrite.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

import optuna

from edgecompress.errors import EdgeCompressError

KEY = "edgecompress"  # the study user attribute holding the study's settings
ACCURACY = {"name": "accuracy", "direction": "maximize"}  # studies made before tasks had metrics


@dataclass(frozen=True)
class StudyMeta:
    """What a study was created with, and what later runs recorded in it."""

    experiment: str  # its name
    objectives: tuple[str, ...]  # the study's objectives: the metric, then latency (and size)
    budget_ms: float  # the latency budget
    reference_latency_ms: float  # the uncompressed model's latency, measured at creation
    target: Mapping[str, Any]  # ``Target.to_dict`` of the target it searched for
    device: Mapping[str, Any]  # the machine it measured on (``describe_device``)
    artifacts: str  # where the trials' ONNX files are (a folder or s3://bucket/prefix)
    metric: Mapping[str, str] = field(default_factory=lambda: dict(ACCURACY))
    speedup: float | None = None  # the budget as asked: teacher / speedup
    fastest_ms: float = 0.0  # the space's most compressed plan, measured at creation
    costing: Mapping[str, Any] | None = None  # ``Costing.to_dict``: the latency table, if any
    experiment_ref: str | None = None  # FILE.py:NAME, for export and workers
    measure_effort: float = 1.0  # the share of its rounds each latency measurement took
    max_drop: float | None = None  # the question: fastest within this drop (None: best in budget)
    signature: Mapping[str, Any] = field(default_factory=dict)  # what a resume must match
    created: str | None = None  # ISO time, UTC
    residuals: Mapping[str, Any] | None = None  # the front re-measured against the table
    recosted_for: str | None = None  # a result re-costed for another target (never stored)
    unknown: Mapping[str, Any] = field(default_factory=dict)  # settings of a later version

    @property
    def metric_name(self) -> str:
        return str(self.metric["name"])

    @property
    def metric_direction(self) -> str:
        return str(self.metric["direction"])

    @property
    def runtime(self) -> str:
        """The runtime the study measured and scored its trials in."""
        return str(self.target.get("runtime", "onnxruntime"))

    @property
    def threads(self) -> int:
        return int(self.target["threads"])

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "unknown"}
        data["objectives"] = list(self.objectives)
        return {**self.unknown, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudyMeta:
        names = {f.name for f in fields(cls)} - {"unknown"}
        known = {k: v for k, v in data.items() if k in names}
        known["objectives"] = tuple(known.get("objectives", ()))
        if known.get("metric") is None:
            known["metric"] = dict(ACCURACY)
        unknown = {k: v for k, v in data.items() if k not in names and k != "unknown"}
        required = [f.name for f in fields(cls) if f.default is MISSING is f.default_factory]
        lacking = [name for name in required if name not in known]
        if lacking:
            raise EdgeCompressError(
                f"the study's settings lack {lacking}: it was made by an older edgecompress "
                "or by hand. Start a new study (--study NEW_NAME)."
            )
        return cls(**known, unknown=unknown)


def has_meta(study: optuna.Study) -> bool:
    return KEY in study.user_attrs


def read(study: optuna.Study) -> StudyMeta:
    """The study's settings as stored now."""
    return StudyMeta.from_dict(study.user_attrs[KEY])


def write(study: optuna.Study, meta: StudyMeta) -> None:
    study.set_user_attr(KEY, meta.to_dict())


def write_new(study: optuna.Study, meta: StudyMeta) -> None:
    """A new study's settings, stamped with the time of its creation."""
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write(study, replace(meta, created=now))


def update(study: optuna.Study, **changes: Any) -> StudyMeta:
    """Changes some settings, reading the others fresh from the storage (another driver may
    have written since this one read them); returns the settings written."""
    fresh = optuna.load_study(study_name=study.study_name, storage=study._storage)
    meta = replace(read(fresh), **changes)
    write(fresh, meta)
    return meta


__all__ = ["KEY", "StudyMeta", "has_meta", "read", "update", "write", "write_new"]
