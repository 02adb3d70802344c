"""A study's settings are one frozen type, read and written in one module (issue 15, item 7)."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from edgecompress.errors import EdgeCompressError
from edgecompress.search.meta import KEY, StudyMeta, read, update, write, write_new


def _meta(**changes: object) -> StudyMeta:
    base = StudyMeta(
        experiment="e",
        objectives=("accuracy", "latency_ms"),
        budget_ms=0.5,
        reference_latency_ms=2.0,
        target={"name": "local-cpu", "threads": 1, "batch_size": 1},
        device={"cpu_model": "some CPU"},
        artifacts="/shared/e",
    )
    return dataclasses.replace(base, **changes)


def test_settings_round_trip_through_the_study_and_are_frozen() -> None:
    study = optuna.create_study()
    write_new(study, _meta(max_drop=0.01, costing={"latency": "live"}))
    meta = read(study)
    assert meta.created is not None  # stamped when the study was made
    assert dataclasses.replace(meta, created=None) == _meta(
        max_drop=0.01, costing={"latency": "live"}
    )
    assert study.user_attrs[KEY]["objectives"] == ["accuracy", "latency_ms"]  # plain JSON
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.budget_ms = 1.0  # type: ignore[misc]


def test_an_update_keeps_what_another_driver_or_a_later_version_wrote() -> None:
    study = optuna.create_study()
    write(study, _meta())
    study.set_user_attr(KEY, {**study.user_attrs[KEY], "from_a_later_version": [1, 2]})
    stale = optuna.load_study(study_name=study.study_name, storage=study._storage)
    study.set_user_attr(KEY, {**study.user_attrs[KEY], "budget_ms": 0.25})  # another driver
    written = update(stale, max_drop=0.02)  # the other settings as stored now
    assert written.budget_ms == 0.25 and written.max_drop == 0.02
    assert study.user_attrs[KEY]["from_a_later_version"] == [1, 2]
    assert read(study).unknown == {"from_a_later_version": [1, 2]}


def test_a_study_made_before_tasks_had_metrics_is_read_as_accuracy() -> None:
    old = _meta().to_dict()
    del old["metric"], old["max_drop"], old["residuals"]
    meta = StudyMeta.from_dict(old)
    assert (meta.metric_name, meta.metric_direction) == ("accuracy", "maximize")
    assert meta.max_drop is None and meta.runtime == "onnxruntime" and meta.threads == 1


def test_settings_lacking_what_a_study_needs_are_refused_with_what_is_missing() -> None:
    old = _meta().to_dict()
    del old["artifacts"]
    with pytest.raises(EdgeCompressError, match=r"lack \['artifacts'\].*new study"):
        StudyMeta.from_dict(old)
