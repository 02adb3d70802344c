import optuna
import pytest

from edgecompress.spaces import default_space, describe
from edgecompress.tasks import FinetuneSettings


def test_default_space_finds_layers_and_leaves_the_output_alone(tiny) -> None:  # type: ignore[no-untyped-def]
    space = default_space(tiny.model(), tiny.example_input, finetune=FinetuneSettings(epochs=2))
    names = [k.name for k in space.knobs()]
    assert names[:2] == ["prune.conv1", "prune.conv2"]
    assert "prune.fc" not in names
    assert {"bits.conv1", "bits.conv2", "bits.fc", "finetune.epochs"} <= set(names)
    assert space.skipped[0].layer == "fc" and "output" in space.skipped[0].reason
    knobs = {k["name"]: k for k in describe(space)}
    assert knobs["prune.conv1"]["kind"] == "float" and knobs["prune.conv1"]["step"] > 0
    assert knobs["bits.fc"] == {
        "name": "bits.fc",
        "kind": "int",
        "layers": ["fc"],
        "low": 8,
        "high": 32,
        "step": 24,
    }


def test_sampled_plans_use_ordered_knobs(tiny) -> None:  # type: ignore[no-untyped-def]
    space = default_space(tiny.model(), tiny.example_input, finetune=FinetuneSettings(epochs=2))
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    plan = space.sample(trial)
    dists = trial.distributions
    assert isinstance(dists["prune.conv1"], optuna.distributions.FloatDistribution)
    assert isinstance(dists["bits.conv1"], optuna.distributions.IntDistribution)
    assert plan["bits.conv1"] in (8, 32) and 0.0 <= plan["prune.conv2"] <= 0.9
    assert plan["finetune.epochs"] == 2 and "finetune.epochs" not in dists


def test_excluded_layers_are_reported(tiny) -> None:  # type: ignore[no-untyped-def]
    space = default_space(
        tiny.model(), tiny.example_input, finetune=FinetuneSettings(), exclude=("conv1",)
    )
    names = {k.name for k in space.knobs()}
    assert "prune.conv1" not in names and "bits.conv1" not in names
    assert any(s.layer == "conv1" and "excluded" in s.reason for s in space.skipped)
    with pytest.raises(ValueError, match="does not have"):
        default_space(
            tiny.model(), tiny.example_input, finetune=FinetuneSettings(), exclude=("nope",)
        )
