import json

import pytest

from edgecompress.plan import InvalidPlan, Plan


def test_plan_round_trips_through_json() -> None:
    plan = Plan({"prune.conv2": 0.35, "bits.fc": 8, "finetune.epochs": 3})
    again = Plan.from_json(json.dumps(json.loads(plan.to_json())))
    assert again == plan
    assert again.key == plan.key
    assert again.to_dict() == {"bits.fc": 8, "finetune.epochs": 3, "prune.conv2": 0.35}


def test_key_depends_on_content_not_order() -> None:
    a = Plan({"prune.a": 0.1, "bits.b": 8})
    b = Plan({"bits.b": 8, "prune.a": 0.1})
    assert a.key == b.key
    assert a.key != Plan({"prune.a": 0.2, "bits.b": 8}).key


def test_section_strips_prefix() -> None:
    plan = Plan({"prune.features.0": 0.5, "prune.fc1": 0.25, "bits.fc1": 32})
    assert plan.section("prune") == {"features.0": 0.5, "fc1": 0.25}


def test_plan_is_a_read_only_mapping() -> None:
    plan = Plan({"prune.a": 0.1})
    with pytest.raises(TypeError):
        plan.entries["prune.a"] = 0.2  # type: ignore[index]
    assert list(plan.values()) == [0.1] and dict(plan) == {"prune.a": 0.1}


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"conv2": 0.5}, "must be '<section>.<name>'"),
        ({"shrink.conv2": 0.5}, "unknown section 'shrink'"),
        ({"prune.conv2": [0.5]}, "JSON scalar"),
    ],
)
def test_bad_plans_are_refused(data: dict, fragment: str) -> None:
    with pytest.raises(InvalidPlan, match=fragment):
        Plan.from_dict(data)
