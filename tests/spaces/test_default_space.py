import optuna
import pytest
import torch

from edgecompress.spaces import TECHNIQUES, AutoSpace, describe
from edgecompress.tasks import FinetuneSettings
from edgecompress.testing import check_space

SETTINGS = FinetuneSettings(epochs=2)


def test_auto_space_finds_layers_per_technique_and_says_what_it_leaves_alone(tiny) -> None:  # type: ignore[no-untyped-def]
    space = AutoSpace(techniques=TECHNIQUES).build(
        tiny.model(), tiny.example_input, finetune=SETTINGS
    )
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
    # the widths the local CPU runs: int4 only for the Linear layer (MatMulNBits)
    assert knobs["bits.fc"] == {
        "name": "bits.fc",
        "kind": "ordinal",
        "layers": ["fc"],
        "choices": [4, 8, 16, 32],
    }
    assert knobs["bits.conv2"]["choices"] == [8, 16, 32]
    assert knobs["method.quant"]["choices"] == ["static", "dynamic", "qat"]
    assert knobs["method.calibration"]["choices"] == ["minmax", "entropy", "percentile"]
    assert knobs["method.calibration_samples"]["choices"] == [64, 128, 256, 512]
    assert knobs["method.rounding"]["choices"] == ["nearest", "stochastic"]
    assert knobs["finetune.kd_mode"]["choices"] == ["soft", "hard"]
    assert knobs["finetune.temperature"]["kind"] == "ordinal"
    reasons = {(s.layer, s.technique): s.reason for s in space.skipped}
    assert "output" in reasons[("fc", "prune")]
    assert "first layer" in reasons[("conv1", "sparsity")]
    assert "last layer" in reasons[("fc", "rank")]
    check_space(space)


def test_ordered_knobs_reach_the_sampler_as_numbers(tiny) -> None:  # type: ignore[no-untyped-def]
    space = AutoSpace(techniques=TECHNIQUES).build(
        tiny.model(), tiny.example_input, finetune=SETTINGS
    )
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    plan = space.sample(trial)
    dists = trial.distributions
    assert isinstance(dists["prune.conv1"], optuna.distributions.FloatDistribution)
    assert isinstance(dists["bits.conv1"], optuna.distributions.IntDistribution)  # an index
    # round_to is ordered: an int index for the sampler, the multiple itself in the plan
    assert isinstance(dists["method.round_to"], optuna.distributions.IntDistribution)
    assert plan["method.round_to"] == (1, 4, 8, 16)[trial.params["method.round_to"]]
    assert isinstance(dists["method.prune_criterion"], optuna.distributions.CategoricalDistribution)
    assert plan["bits.conv1"] == (8, 16, 32)[trial.params["bits.conv1"]]
    assert 0.0 <= plan["prune.conv2"] <= 0.95
    assert 0.1 <= plan["rank.conv2"] <= 1.0
    assert plan["finetune.epochs"] == 2 and "finetune.epochs" not in dists


def test_stages_tie_layers_to_one_knob(tiny) -> None:  # type: ignore[no-untyped-def]
    space = AutoSpace(techniques=TECHNIQUES, stages=1, keep_first_last=False).build(
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


class WithEmbedding(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 8)
        self.fc1 = torch.nn.Linear(8, 16)
        self.fc2 = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.embed(x).mean(1))))


def test_layers_no_technique_handles_are_reported_not_a_crash() -> None:
    space = AutoSpace().build(
        WithEmbedding(), torch.zeros(1, 5, dtype=torch.long), finetune=SETTINGS
    )
    reasons = {s.layer: s.reason for s in space.skipped if not s.technique}
    assert reasons["embed"].startswith("embedding table: not quantized or factorized")
    assert "prune.fc1" in {k.name for k in space.knobs()}


def test_a_model_torch_pruning_cannot_trace_keeps_its_other_knobs(
    tiny, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("data-dependent control flow")

    monkeypatch.setattr("edgecompress.spaces.auto.channel_groups", fail)
    space = AutoSpace().build(tiny.model(), tiny.example_input, finetune=SETTINGS)
    names = {k.name for k in space.knobs()}
    assert not any(n.startswith("prune.") for n in names) and "rank.conv2" in names
    reasons = {(s.layer, s.technique): s.reason for s in space.skipped}
    assert "cannot trace" in reasons[("conv1", "prune")]
    assert "data-dependent control flow" in reasons[("conv1", "prune")]


def test_sparsity_is_searched_by_default_only_when_a_size_is_an_objective(tiny) -> None:  # type: ignore[no-untyped-def]
    def sections(objectives: tuple[str, ...]) -> set[str]:
        space = AutoSpace().build(
            tiny.model(), tiny.example_input, finetune=SETTINGS, objectives=objectives
        )
        return {key.split(".")[0] for k in space.knobs() for key in k.plan_keys()}

    assert "sparsity" not in sections(("accuracy", "latency_ms"))
    assert {"prune", "rank", "bits"} <= sections(("accuracy", "latency_ms"))
    assert "sparsity" in sections(("accuracy", "latency_ms", "size_gz_mb"))


def test_slimming_gets_its_l1_strength_knob_once(tiny) -> None:  # type: ignore[no-untyped-def]
    def count(**kw: object) -> int:
        space = AutoSpace(**kw).build(tiny.model(), tiny.example_input, finetune=SETTINGS)  # type: ignore[arg-type]
        return [k.name for k in space.knobs()].count("method.l1_strength")

    assert count(techniques=("prune",), criteria=("l1", "slimming")) == 1
    assert count(techniques=("prune",), criteria=("l1", "taylor")) == 0
    assert count(techniques=("prune", "sparsity"), criteria=("slimming",)) == 1
    assert count(techniques=("rank",)) == 0


@pytest.mark.parametrize(
    "settings", [{"max_prune": 0.93}, {"min_rank_share": 0.12}, {"max_sparsity": 0.97}]
)
def test_ranges_off_the_knob_grid_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="grid"):
        AutoSpace(**settings)  # type: ignore[arg-type]


def test_no_layer_is_both_a_knob_and_left_alone_by_the_same_technique() -> None:
    """``nn.TransformerEncoder``'s feed-forward layers: pruned by their group's knob, and were
    also listed as left alone by pruning, for a parent that reads their weights (issue 14)."""
    layer = torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 32),
        torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
        torch.nn.Linear(32, 4),
    ).eval()
    space = AutoSpace().build(model, torch.zeros(1, 6, 8), finetune=SETTINGS)
    sections = {"prune": "prune", "rank": "rank", "bits": "bits"}
    knobbed = {
        (k.section, layer) for k in space.knobs() if k.section in sections for layer in k.layers
    }
    left = {(s.technique, s.layer) for s in space.skipped if s.technique in sections}
    assert ("prune", "1.layers.0.linear1") in knobbed  # the feed-forward width is searched
    assert not knobbed & left, sorted(knobbed & left)
    # a projection no knob narrows is still said to be left alone, and why
    assert ("prune", "1.layers.0.self_attn.out_proj") in left
