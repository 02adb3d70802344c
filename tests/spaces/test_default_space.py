import optuna
import pytest

from edgecompress.spaces import AutoSpace, describe
from edgecompress.tasks import FinetuneSettings
from edgecompress.testing import check_space

SETTINGS = FinetuneSettings(epochs=2)


def test_auto_space_finds_layers_per_technique_and_says_what_it_leaves_alone(tiny) -> None:  # type: ignore[no-untyped-def]
    space = AutoSpace().build(tiny.model(), tiny.example_input, finetune=SETTINGS)
    names = [k.name for k in space.knobs()]
    assert names[:2] == ["prune.conv1", "prune.conv2"]
    assert "prune.fc" not in names
    # first and last layers keep their weights dense and full-rank by default
    assert "sparsity.conv2" in names and "rank.conv2" in names
    assert not {"sparsity.conv1", "sparsity.fc", "rank.conv1", "rank.fc"} & set(names)
    assert {"bits.conv1", "bits.conv2", "bits.fc", "finetune.epochs"} <= set(names)
    assert {"method.prune_criterion", "method.round_to", "method.sparsity"} <= set(names)
    # Conv1d only: Tucker-2 is the one decomposition, a fixed entry
    knobs = {k["name"]: k for k in describe(space)}
    assert knobs["method.decomposition"] == {
        "name": "method.decomposition",
        "kind": "fixed",
        "layers": [],
        "value": "tucker2",
    }
    assert knobs["method.round_to"]["kind"] == "ordinal"
    assert knobs["method.round_to"]["choices"] == [1, 4, 8, 16]
    assert knobs["bits.fc"] == {
        "name": "bits.fc",
        "kind": "int",
        "layers": ["fc"],
        "low": 8,
        "high": 32,
        "step": 24,
    }
    reasons = {(s.layer, s.technique): s.reason for s in space.skipped}
    assert "output" in reasons[("fc", "prune")]
    assert "first layer" in reasons[("conv1", "sparsity")]
    assert "last layer" in reasons[("fc", "rank")]
    check_space(space)


def test_ordered_knobs_reach_the_sampler_as_numbers(tiny) -> None:  # type: ignore[no-untyped-def]
    space = AutoSpace().build(tiny.model(), tiny.example_input, finetune=SETTINGS)
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    plan = space.sample(trial)
    dists = trial.distributions
    assert isinstance(dists["prune.conv1"], optuna.distributions.FloatDistribution)
    assert isinstance(dists["bits.conv1"], optuna.distributions.IntDistribution)
    # round_to is ordered: an int index for the sampler, the multiple itself in the plan
    assert isinstance(dists["method.round_to"], optuna.distributions.IntDistribution)
    assert plan["method.round_to"] == (1, 4, 8, 16)[trial.params["method.round_to"]]
    assert isinstance(dists["method.prune_criterion"], optuna.distributions.CategoricalDistribution)
    assert plan["bits.conv1"] in (8, 32) and 0.0 <= plan["prune.conv2"] <= 0.9
    assert 0.1 <= plan["rank.conv2"] <= 1.0
    assert plan["finetune.epochs"] == 2 and "finetune.epochs" not in dists


def test_stages_tie_layers_to_one_knob(tiny) -> None:  # type: ignore[no-untyped-def]
    space = AutoSpace(stages=1, keep_first_last=False).build(
        tiny.model(), tiny.example_input, finetune=SETTINGS
    )
    knobs = {k.name: k for k in space.knobs()}
    assert knobs["prune:stage0"].targets == ("prune.conv1", "prune.conv2")
    assert knobs["sparsity:stage0"].layers == ("conv1", "conv2", "fc")
    plan = space.sample(optuna.trial.FixedTrial({**_identity(space), "prune:stage0": 0.5}))
    assert plan["prune.conv1"] == plan["prune.conv2"] == 0.5
    check_space(space)


def test_techniques_and_epochs_are_configurable(tiny) -> None:  # type: ignore[no-untyped-def]
    space = AutoSpace(techniques=("rank",), epochs=(1, 4)).build(
        tiny.model(), tiny.example_input, finetune=SETTINGS
    )
    names = {k.name for k in space.knobs()}
    assert {n.split(".")[0] for n in names} == {"rank", "method", "finetune"}
    epochs = next(k for k in space.knobs() if k.name == "finetune.epochs")
    assert (epochs.kind, epochs.low, epochs.high) == ("int", 1, 4)
    with pytest.raises(ValueError, match="techniques"):
        AutoSpace(techniques=("prune", "magic"))


def test_excluded_layers_are_reported(tiny) -> None:  # type: ignore[no-untyped-def]
    space = AutoSpace().build(
        tiny.model(), tiny.example_input, finetune=SETTINGS, exclude=("conv1",)
    )
    names = {k.name for k in space.knobs()}
    assert "prune.conv1" not in names and "bits.conv1" not in names
    assert any(s.layer == "conv1" and "excluded" in s.reason for s in space.skipped)
    with pytest.raises(ValueError, match="does not have"):
        AutoSpace().build(tiny.model(), tiny.example_input, finetune=SETTINGS, exclude=("nope",))


def _identity(space) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return {k.name: k.param(k.identity) for k in space.knobs() if k.identity is not None}
