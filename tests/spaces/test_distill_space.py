import optuna
import pytest

from edgecompress.compress.pipeline import finetune_settings
from edgecompress.plan import Plan
from edgecompress.spaces.base import describe
from edgecompress.spaces.distill import distillation_knobs
from edgecompress.tasks import FinetuneSettings
from edgecompress.testing import check_space

KEYS = {"finetune.temperature", "finetune.kd_weight", "finetune.kd_mode", "finetune.hint_weight"}


def test_a_fixed_trial_gives_the_four_distillation_settings() -> None:
    space = distillation_knobs(FinetuneSettings())
    params = {
        "finetune.temperature": 3,  # ordered: an index for the sampler
        "finetune.kd_weight": 0.3,
        "finetune.kd_mode": "hard",
        "finetune.hint_weight": 1,
    }
    plan = space.sample(optuna.trial.FixedTrial(params))  # type: ignore[arg-type]
    assert plan == Plan(
        {
            "finetune.temperature": 8.0,
            "finetune.kd_weight": 0.3,
            "finetune.kd_mode": "hard",
            "finetune.hint_weight": 0.1,
        }
    )
    settings = finetune_settings(plan, FinetuneSettings(epochs=1))
    assert (settings.kd_mode, settings.hint_weight, settings.temperature) == ("hard", 0.1, 8.0)


def test_a_study_samples_numbers_for_ordered_knobs() -> None:
    space = distillation_knobs(FinetuneSettings())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        plan = space.sample(trial)
        assert set(plan) == KEYS
        assert isinstance(plan["finetune.temperature"], float)
        assert isinstance(plan["finetune.kd_weight"], float)
        assert isinstance(plan["finetune.hint_weight"], float)
        assert plan["finetune.kd_mode"] in ("soft", "hard")
        dists = trial.distributions
        assert isinstance(dists["finetune.temperature"], optuna.distributions.IntDistribution)
        assert isinstance(dists["finetune.hint_weight"], optuna.distributions.IntDistribution)
        assert isinstance(dists["finetune.kd_weight"], optuna.distributions.FloatDistribution)
        study.tell(trial, 0.0)
    check_space(space)


def test_identity_is_the_given_settings() -> None:
    identity = {k.name: k.identity for k in distillation_knobs(FinetuneSettings()).knobs()}
    assert identity == {
        "finetune.temperature": 4.0,
        "finetune.kd_weight": 0.7,
        "finetune.kd_mode": "soft",
        "finetune.hint_weight": 0.0,
    }
    off_grid = FinetuneSettings(temperature=3.0, kd_weight=0.73, kd_mode="hard", hint_weight=0.5)
    space = distillation_knobs(off_grid, modes=("soft",), hint_weights=(0.0, 0.5))
    identity = {k.name: k.identity for k in space.knobs()}
    assert identity == {
        "finetune.temperature": 1.0,
        "finetune.kd_weight": 0.7,
        "finetune.kd_mode": "soft",
        "finetune.hint_weight": 0.5,
    }


def test_choices_are_described() -> None:
    knobs = {k["name"]: k for k in describe(distillation_knobs(FinetuneSettings()))}
    assert knobs["finetune.temperature"]["choices"] == [1.0, 2.0, 4.0, 8.0]
    assert knobs["finetune.kd_mode"] == {
        "name": "finetune.kd_mode",
        "kind": "choice",
        "layers": [],
        "choices": ["soft", "hard"],
    }
    assert (knobs["finetune.kd_weight"]["low"], knobs["finetune.kd_weight"]["high"]) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"modes": ("soft", "medium")}, r"distillation modes \['medium'\]"),
        ({"modes": ()}, "distillation modes"),
        ({"temperatures": (0.0, 1.0)}, r"temperatures \[0.0, 1.0\].*> 0"),
        ({"temperatures": (4.0, 2.0)}, "distinct increasing"),
        ({"hint_weights": (-1.0, 0.0)}, r"hint_weights \[-1.0, 0.0\].*>= 0"),
        ({"hint_weights": ()}, "hint_weights"),
    ],
)
def test_bad_choices_are_refused(options: dict[str, tuple], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        distillation_knobs(FinetuneSettings(), **options)
