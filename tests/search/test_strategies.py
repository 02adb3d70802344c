"""Strategies as plug-ins, latency known before training, per-trial seeds, the question asked."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from edgecompress.cli import main
from edgecompress.errors import EdgeCompressError
from edgecompress.plan import Plan
from edgecompress.search import Proposal, Result, Strategy, search
from edgecompress.search.front import columns
from edgecompress.search.ledger import Ledger
from edgecompress.search.strategies import ATTR, Context, strategy_named
from edgecompress.search.trial import reference_of, run_trial
from edgecompress.spaces import KnobSpace, baseline_params, replay
from edgecompress.tasks import ClassificationTask
from edgecompress.tasks.metrics import ACCURACY, RMSE, Metric
from tests.conftest import TINY

from .test_front import study_meta  # type: ignore[import-not-found]


class HalfThenSampler(Strategy):
    """A strategy written by a user: one plan of its own (every group pruned by half), then
    whatever its sampler picks."""

    name = "half-then-sampler"
    uniform_seeds = False

    def __init__(self) -> None:
        self.asked = 0

    def ask(self, study: optuna.Study, context: Context) -> Proposal | None:
        self.asked += 1
        if any(t.user_attrs.get("proposed_by") == "half" for t in study.get_trials()):
            return None
        params: dict[str, Any] = {
            k.name: 0.5 for k in context.space.knobs() if k.name.startswith("prune.")
        }
        return Proposal(params, "half", {"mine": True})


def test_a_strategy_plug_in_runs_a_search(tiny, workdir) -> None:  # type: ignore[no-untyped-def]
    strategy = HalfThenSampler()
    result = search(
        tiny, trials=4, budget_ms=100.0, storage="sqlite:///s.db", progress=False, strategy=strategy
    )
    study = optuna.load_study(study_name="tiny", storage="sqlite:///s.db")
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 4 and strategy.asked >= 2  # asked once no baseline was waiting
    mine = [t for t in done if t.user_attrs.get("proposed_by") == "half"]
    assert len(mine) == 1 and mine[0].user_attrs["mine"] is True
    assert {v for k, v in mine[0].user_attrs["plan"].items() if k.startswith("prune.")} == {0.5}
    assert "uniform prune 0.45" not in set(result.trials["baseline"])  # it asked for none
    assert list(result.trials["proposed_by"]).count("half") == 1
    # each trial fine-tuned from its own seed, recorded as such
    assert all(t.user_attrs["accuracy_se"] > 0 for t in done)


def test_strategies_by_name_and_a_clear_error(capsys) -> None:  # type: ignore[no-untyped-def]
    assert strategy_named(None).name == "allocate"
    assert strategy_named("tpe").name == "tpe" and strategy_named("random").name == "random"
    mine = HalfThenSampler()
    assert strategy_named(mine) is mine
    with pytest.raises(EdgeCompressError, match="allocate"):
        strategy_named("bayes")
    with pytest.raises(SystemExit) as exit_:
        main(["search", TINY, "--speedup", "2", "--trials", "3", "--strategy", "bayes"])
    assert exit_.value.code == 2
    assert "invalid choice: 'bayes'" in capsys.readouterr().err


def test_max_drop_is_checked_before_any_work(workdir, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(["search", TINY, "--speedup", "2", "--trials", "3", "--max-drop", "1.5"])
    assert code == 2
    assert "--max-drop" in capsys.readouterr().err
    assert not (workdir / "edgecompress.db").exists()


class _NoTraining(ClassificationTask):
    def fit(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise AssertionError("a plan known to miss the budget was fine-tuned")


def test_a_plan_known_over_the_budget_is_never_fine_tuned(tiny, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    task = _NoTraining(
        train=tiny.task.train,
        val=tiny.task.val,
        finetune=tiny.task.finetune,
        calibration_samples=64,
    )
    experiment = replace(tiny, task=task)
    reference = reference_of(experiment)
    plan = Plan({"prune.conv1": 0.5, "finetune.epochs": 1})
    outcome = run_trial(
        experiment,
        plan,
        reference=reference,
        reference_ms=1.0,
        artifacts=str(tmp_path),
        artifact_id="screened",
        budget_ms=1e-6,
    )
    assert outcome.screened and outcome.artifact == "" and not list(tmp_path.iterdir())
    assert outcome.metrics["screened_latency_ms"] == outcome.metrics["untrained_latency_ms"]
    assert outcome.metrics["untrained_latency_ms"] > 1e-6
    assert "measured untrained" in outcome.notes["screened"]


def test_trials_fine_tune_from_their_own_seed(tiny, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    seen: list[int] = []
    fit = ClassificationTask.fit

    def recording(self, student, teacher, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs["seed"])
        return fit(self, student, teacher, **kwargs)

    monkeypatch.setattr(ClassificationTask, "fit", recording)
    reference = reference_of(tiny)
    plan = Plan({"prune.conv1": 0.25, "finetune.epochs": 1})
    for seed in (7, 8):
        run_trial(
            tiny,
            plan,
            reference=reference,
            reference_ms=1.0,
            artifacts=str(tmp_path),
            artifact_id=f"seeded-{seed}",
            seed=seed,
        )
    assert seen == [7, 8]

    study = optuna.create_study(directions=["maximize", "minimize"])
    ledger = Ledger(study, KnobSpace(), ("accuracy", "latency_ms"), seed=100)
    first, second = study.ask(), study.ask()
    assert (ledger.seed_of(first), ledger.seed_of(second)) == (100, 101)
    study.enqueue_trial({}, user_attrs={"retry_of": first.number})
    retry = study.ask()
    assert ledger.seed_of(retry) == 100  # a retry repeats its original's fine-tune


def _result(rows: list[tuple[int, float, float, str]], meta: dict[str, Any]) -> Result:
    frame = pd.DataFrame(
        [
            {
                "trial": n,
                "accuracy": acc,
                "accuracy_se": 0.003,
                "test_accuracy": math.nan,
                "latency_ms": lat,
                "size_mb": 1.0,
                "feasible": lat <= meta["budget_ms"],
                "violation_ms": max(0.0, lat - meta["budget_ms"]),
                "baseline": base,
                "proposed_by": "",
                "plan": {},
            }
            for n, acc, lat, base in rows
        ],
        columns=columns("accuracy"),
    )
    return Result("s", study_meta(**meta), frame, failed=0, artifacts={})


def test_best_answers_the_question_asked() -> None:
    rows = [
        (0, 0.985, 2.0, "teacher"),
        (1, 0.984, 0.08, ""),
        (2, 0.978, 0.04, ""),  # within one point of the teacher, and the fastest so
        (3, 0.970, 0.02, ""),
        (4, 0.986, 0.09, ""),
    ]
    meta = {"budget_ms": 0.1, "objectives": ["accuracy", "latency_ms"], "reference_latency_ms": 2}
    assert _result(rows, meta).best()["trial"] == 4  # the most accurate within the budget
    asked = _result(rows, {**meta, "max_drop": 0.01})
    assert asked.max_drop == 0.01 and asked.best()["trial"] == 2
    none_close = _result(rows[:1] + rows[3:4], {**meta, "max_drop": 0.001})
    assert none_close.best()["trial"] == 3  # nothing within the drop: the most accurate


def test_allocate_search_measures_its_plans_within_their_targets(tiny, workdir, capsys) -> None:  # type: ignore[no-untyped-def]
    result = search(tiny, trials=4, speedup=1.0, storage="sqlite:///a.db", progress=False)
    study = optuna.load_study(study_name="tiny", storage="sqlite:///a.db")
    trials = study.get_trials()
    proposed = [t for t in trials if ATTR in t.user_attrs]
    assert proposed, "the allocation strategy proposed nothing"
    for t in proposed:
        record = t.user_attrs[ATTR]
        assert record["untrained_latency_ms"] <= record["target_ms"]
        assert record["target_ms"] <= result.budget_ms + 1e-12
    labels = [t.user_attrs[ATTR]["label"] for t in proposed]
    assert len(labels) == len(set(labels))  # nothing proposed twice
    # no plan measured over the budget before training was trained
    for t in trials:
        before = t.user_attrs.get("untrained_latency_ms")
        if t.state == TrialState.COMPLETE and before is not None:
            assert before <= result.budget_ms * 1.05
    # the profile it used is cached, and `profile` shows it without measuring again
    assert main(["profile", TINY, "--format", "json", "--no-progress"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["knob"] for r in rows} >= {"prune.conv1", "prune.conv2"}
    assert all({"value", "damage", "saved_ms", "saved_pct"} <= set(r) for r in rows)


def _run_schedule(
    strategy: Any, study: optuna.Study, context: Context, count: int
) -> list[dict[str, Any]]:
    """``count`` proposals of ``strategy``, each told to ``study`` as a finished trial (its
    accuracy falling with its predicted damage, its latency the untrained one)."""
    records = []
    for _ in range(count):
        proposal = strategy.ask(study, context)
        assert proposal is not None
        record = proposal.attrs[ATTR]
        trial = study.ask()
        trial.set_user_attr(ATTR, record)
        accuracy = 0.99 - 0.01 * (record["predicted_damage"] or 0.0)
        trial.set_user_attr("accuracy", accuracy)
        trial.set_user_attr("latency_ms", record["untrained_latency_ms"])
        study.tell(trial, [accuracy, record["untrained_latency_ms"]])
        records.append(record)
    return records


def _context(space: Any, latency: Any, budget_ms: float, fastest_ms: float) -> Context:
    return Context(
        experiment=None,  # type: ignore[arg-type] - the profile is given, nothing is trained
        space=space,
        budget_ms=budget_ms,
        reference_ms=1.0,
        latency=latency,
        fastest_ms=fastest_ms,
    )


def test_allocate_ladder_runs_from_the_budget_to_the_floor_and_resumes() -> None:
    from edgecompress.search.strategies import LADDER_ATTR, Allocate
    from tests.search.test_allocation import _profile, _space, latency

    calls: list[float] = []

    def probe(plan: Plan) -> float:
        calls.append(latency(plan))
        return calls[-1]

    study = optuna.create_study(directions=["maximize", "minimize"])
    strategy = Allocate()
    strategy._profile = _profile()
    context = _context(_space(), probe, budget_ms=0.8, fastest_ms=0.0)
    records = _run_schedule(strategy, study, context, 12)
    ladder = study.user_attrs[LADDER_ATTR]
    assert ladder["reach"] and 1 <= len(ladder["aims"]) <= Allocate.MOST_RUNGS
    aims = ladder["aims"]
    assert aims == sorted(aims, reverse=True) and aims[-1] == pytest.approx(ladder["least"])
    assert ladder["least"] * 0.8 * Allocate.SAFETY == pytest.approx(
        ladder["floor_ms"] * Allocate.FLOOR_SLACK, rel=1e-3
    )
    labels = [r["label"] for r in records]
    assert labels[:2] == ["uniform at budget", "allocation at budget"]
    assert labels[2 : 2 + len(aims)] == [f"allocation at {a:g} x budget" for a in aims]
    for r in records:  # each measured within its target, every target within the budget
        assert r["untrained_latency_ms"] <= r["target_ms"] <= 0.8 * Allocate.SAFETY + 1e-12
    deepest = records[1 + len(aims)]
    assert deepest["target_ms"] <= ladder["floor_ms"] * Allocate.FLOOR_SLACK * 1.001
    # a uniform plan matched to each rung follows, or the rung is recorded as out of its reach
    uniform = {r["label"] for r in records if r["settings"].get("uniform")}
    for aim in aims:
        label = f"uniform at {aim:g} x budget"
        assert (label in uniform) != (label in study.user_attrs[LADDER_ATTR].get("missed", []))
    assert any(r["label"].startswith("refinement") for r in records)
    # resumed by a new strategy object: the floor is not measured again, nothing is repeated
    again = Allocate()
    again._profile = _profile()
    before = len(calls)
    more = _run_schedule(again, study, context, 2)
    assert study.user_attrs[LADDER_ATTR]["aims"] == aims
    assert all(r["label"].startswith("refinement") for r in more)
    assert len({r["label"] for r in records + more}) == len(records) + len(more)
    assert len(calls) > before  # the refinements were measured, the floor was not re-measured
    assert study.user_attrs[LADDER_ATTR]["floor_ms"] == ladder["floor_ms"]


def test_allocate_beyond_the_profiled_floor_compresses_every_section() -> None:
    from edgecompress.search.strategies import LADDER_ATTR, Allocate
    from tests.search.test_allocation import _shrinking

    space, profile = _two_section_profile()
    strategy = Allocate()
    strategy._profile = profile
    # pruning alone reaches 0.15 (width 1); the students reach 0.075
    context = _context(space, _shrinking, budget_ms=0.12, fastest_ms=0.075)
    study = optuna.create_study(directions=["maximize", "minimize"])
    records = _run_schedule(strategy, study, context, 3)  # the schedule, then a refinement
    assert not study.user_attrs[LADDER_ATTR]["reach"]
    assert records[0]["label"] == "compressed at budget"
    assert records[0]["untrained_latency_ms"] > 0
    assert records[-1]["label"] == "refinement 1"
    for r in records:
        assert r["untrained_latency_ms"] <= r["target_ms"] <= 0.12 * Allocate.SAFETY + 1e-12
        assert r["settings"]["level"] is True and r["predicted_damage"] is None


def _walk(
    strategy: Any, study: optuna.Study, context: Context, count: int, line_ms: float
) -> list[dict[str, Any]]:
    """``count`` proposals told as finished: as good as the teacher at ``line_ms`` or slower,
    5 points worse (by the context's metric: accuracy 0.99 -> 0.94, rmse 0.10 -> 0.15) when
    faster."""
    metric = context.metric
    good = 0.99 if metric.higher_is_better else 0.10
    bad = good - 0.05 if metric.higher_is_better else good + 0.05
    if not study.trials:  # the teacher, at the reference latency
        study.enqueue_trial(baseline_params(context.space, "teacher"))
        trial = study.ask()
        context.space.sample(trial)
        trial.set_user_attr("baseline", "teacher")
        for name, value in ((metric.name, good), ("latency_ms", 1.0)):
            trial.set_user_attr(name, value)
        study.tell(trial, [good, 1.0])
    records = []
    for _ in range(count):
        proposal = strategy.ask(study, context)
        assert proposal is not None
        record = proposal.attrs[ATTR]
        study.enqueue_trial(proposal.params)
        trial = study.ask()
        context.space.sample(trial)
        trial.set_user_attr(ATTR, record)
        latency = record["untrained_latency_ms"]
        value = good if latency >= line_ms else bad
        trial.set_user_attr(metric.name, value)
        trial.set_user_attr("latency_ms", latency)
        trial.set_user_attr("plan_key", replay(context.space, proposal.params).key)
        study.tell(trial, [value, latency])
        records.append(record)
    return records


def _two_section_profile() -> tuple[Any, Any]:
    """``_two_sections``' space and its profile: each pruning group alone, damage ratio**2."""
    from edgecompress.search.sensitivity import Point, Sensitivity
    from tests.search.test_allocation import _shrinking, _two_sections

    space = _two_sections()
    base = {"prune.a": 0.0, "prune.b": 0.0, "student.width": 1.0}

    def ratio(changes: dict[str, float]) -> float:
        return _shrinking(space.sample(optuna.trial.FixedTrial({**base, **changes})))

    prune = {
        n: tuple(Point(r, r**2, ratio({n: r})) for r in (0.25, 0.5, 0.75, 0.9))
        for n in ("prune.a", "prune.b")
    }
    return space, Sensitivity(base, 0.0, ratio({}), prune, {})


@pytest.mark.parametrize("metric", [ACCURACY, RMSE], ids=["accuracy", "rmse"])
def test_max_drop_walks_to_the_boundary_within_the_allocations_reach(metric: Metric) -> None:
    """The same walk whichever way the study's metric points (an error: lower is better)."""
    from edgecompress.search.strategies import DROP, LADDER_ATTR, Allocate
    from tests.search.test_allocation import _shrinking

    space, profile = _two_section_profile()
    strategy = Allocate()
    strategy._profile = profile
    context = replace(
        _context(space, _shrinking, budget_ms=0.8, fastest_ms=0.0), max_drop=0.01, metric=metric
    )
    study = optuna.create_study(directions=[metric.direction, "minimize"])
    records = _walk(strategy, study, context, 14, line_ms=0.35)
    ladder = study.user_attrs[LADDER_ATTR]
    assert ladder["reach"] and ladder["floor_ms"] < 0.35  # the line lies within the ladder
    walked = [i for i, r in enumerate(records) if r["label"].startswith(DROP)]
    assert walked and records[walked[0] - 1]["label"].startswith("uniform at")  # after the ladder
    for i in walked:  # each step lands strictly inside the bracket of what ran before it
        before = [r["untrained_latency_ms"] for r in records[:i]]
        within = min(ms for ms in before if ms >= 0.35)
        outside = max(ms for ms in before if ms < 0.35)
        step = records[i]
        assert outside < step["untrained_latency_ms"] < within and within / outside > Allocate.GAP
        assert step["untrained_latency_ms"] <= step["target_ms"] <= 0.8 * Allocate.SAFETY
    assert [records[i]["label"] for i in walked] == [f"{DROP} {n + 1}" for n in range(len(walked))]
    # once the bracket holds no new plan (here the 0.05 grid's next plans ran already), the
    # refinement goes on; nothing was run twice
    assert records[-1]["label"].startswith("refinement")
    keys = [
        t.user_attrs["plan_key"]
        for t in study.trials
        if t.user_attrs.get(ATTR, {}).get("label", "").startswith(DROP)
    ]
    assert len(set(keys)) == len(keys)


def test_max_drop_splits_the_bracket_around_a_step_still_running() -> None:
    """With a step of the walk still running (another worker's), the next one goes to the
    widest gap it leaves inside the bracket, not to a refinement; with both running, the gaps
    left are narrower than the bracket's half."""
    from edgecompress.search.strategies import DROP, Allocate
    from tests.search.test_allocation import _shrinking

    space, profile = _two_section_profile()
    strategy = Allocate()
    strategy._profile = profile
    context = replace(_context(space, _shrinking, budget_ms=0.8, fastest_ms=0.0), max_drop=0.01)
    study = optuna.create_study(directions=["maximize", "minimize"])
    records = _walk(strategy, study, context, 14, line_ms=0.7)
    first = next(i for i, r in enumerate(records) if r["label"].startswith(DROP))
    # the same study again, up to the first step, which is left running this time
    again = optuna.create_study(directions=["maximize", "minimize"])
    walker = Allocate()
    walker._profile = profile
    _walk(walker, again, context, first, line_ms=0.7)
    before = [r["untrained_latency_ms"] for r in records[:first]]
    within = min(ms for ms in before if ms >= 0.7)
    outside = max(ms for ms in before if ms < 0.7)
    running = []
    for _ in range(2):
        proposal = walker.ask(again, context)
        assert proposal is not None
        again.enqueue_trial(proposal.params, user_attrs={ATTR: proposal.attrs[ATTR]})
        trial = again.ask()  # left running
        trial.set_user_attr("plan_key", replay(space, proposal.params).key)
        running.append(proposal.attrs[ATTR])
    assert [r["label"] for r in running] == [f"{DROP} 1", f"{DROP} 2"]
    assert running[0]["untrained_latency_ms"] == records[first]["untrained_latency_ms"]
    points = sorted([outside, within, *(r["untrained_latency_ms"] for r in running)])
    assert points[0] == outside and points[-1] == within  # both inside the bracket
    assert len(set(points)) == 4  # two different plans
    gaps = [b / a for a, b in zip(points, points[1:], strict=False)]
    assert max(gaps) < (within / outside) ** 0.75


def _ran(
    study: optuna.Study,
    space: Any,
    params: dict[str, Any] | None,
    what: str | tuple[str, dict[str, Any]] | None,
    accuracy: float,
    latency: float,
) -> None:
    """A finished trial told to ``study``: ``params`` sampled (None: none), ``what`` a
    baseline's name or a proposal's (label, settings)."""
    if params is not None:
        study.enqueue_trial(params)
    trial = study.ask()
    if params is not None:
        space.sample(trial)
    if isinstance(what, str):
        trial.set_user_attr("baseline", what)
    elif what is not None:
        trial.set_user_attr(ATTR, {"label": what[0], "settings": what[1]})
    trial.set_user_attr("accuracy", accuracy)
    trial.set_user_attr("latency_ms", latency)
    study.tell(trial, [accuracy, latency])


def test_a_uniform_plan_outside_the_drop_does_not_end_the_walk() -> None:
    """The bracket's far end is the allocations': a uniform plan just faster than the fastest
    plan within the drop, and outside it (the MLP's seed 0), says nothing of an allocation
    there. Below the measured floor the walk still tries the allocation first."""
    from edgecompress.search.strategies import DROP, Allocate
    from tests.search.test_allocation import _shrinking

    space, profile = _two_section_profile()
    strategy = Allocate()
    strategy._profile = profile
    context = replace(_context(space, _shrinking, budget_ms=0.8, fastest_ms=0.0), max_drop=0.01)
    study = optuna.create_study(directions=["maximize", "minimize"])
    _ran(study, space, None, "teacher", 0.99, 1.0)
    _ran(study, space, None, ("allocation at budget", {"aim": 1.0}), 0.99, 0.5)
    _ran(study, space, None, ("uniform at budget", {"uniform": True, "aim": 1.0}), 0.94, 0.48)
    _ran(study, space, None, ("allocation at 0.4 x budget", {"aim": 0.4}), 0.94, 0.25)
    ladder = {"reach": True, "least": 0.57, "floor_ms": 0.4, "aims": [0.57]}
    step = strategy._toward_drop(study, context, ladder)
    assert step is not None and step.label == f"{DROP} 1"
    record = step.attrs[ATTR]
    assert 0.25 < record["untrained_latency_ms"] <= record["target_ms"] < 0.48
    assert abs(record["target_ms"] - (0.25 * 0.5) ** 0.5) < 1e-9  # the middle of [0.25, 0.5]
    # its aim lies below the ladder's floor (0.57 x 0.76), within its noise: an allocation
    assert record["settings"]["below_floor"] and not record["settings"].get("uniform")


def test_a_step_out_of_reach_is_tried_again_halfway_back() -> None:
    """Where nothing reaches a step's target (here the students of the fastest plan within
    stop at 0.075 ms, the target is 0.6 x 0.11), the step is tried again halfway back toward
    that plan, not given up to a refinement."""
    from edgecompress.search.strategies import DROP, Allocate
    from tests.search.test_allocation import _shrinking

    space, profile = _two_section_profile()
    strategy = Allocate()
    strategy._profile = profile
    context = replace(_context(space, _shrinking, budget_ms=0.8, fastest_ms=0.0), max_drop=0.01)
    study = optuna.create_study(directions=["maximize", "minimize"])
    # the teacher, and a student plan within the drop
    _ran(study, space, {"prune.a": 0.0, "prune.b": 0.0, "student.width": 1.0}, "teacher", 0.99, 1)
    _ran(study, space, {"prune.a": 0.9, "prune.b": 0.9, "student.width": 0.6}, None, 0.99, 0.11)
    ladder = {"reach": True, "least": 0.3, "floor_ms": 0.15, "aims": [0.3]}
    step = strategy._toward_drop(study, context, ladder)
    assert step is not None and step.label == f"{DROP} 1"
    record = step.attrs[ATTR]
    assert abs(record["target_ms"] - (0.066 * 0.11) ** 0.5) < 1e-9  # the second target
    assert 0.075 <= record["untrained_latency_ms"] <= record["target_ms"]
    assert record["settings"]["from_trial"] == 1 and step.params["student.width"] < 0.6


def test_max_drop_past_the_floor_compresses_the_students_of_the_fastest_plan_within() -> None:
    from edgecompress.search.strategies import DROP, LADDER_ATTR, Allocate
    from tests.search.test_allocation import _shrinking

    space, profile = _two_section_profile()
    strategy = Allocate()
    strategy._profile = profile
    context = replace(_context(space, _shrinking, budget_ms=0.8, fastest_ms=0.0), max_drop=0.01)
    study = optuna.create_study(directions=["maximize", "minimize"])
    schedule = _walk(strategy, study, context, 12, line_ms=0.09)  # pruning alone stops at 0.15
    floor_ms = study.user_attrs[LADDER_ATTR]["floor_ms"]
    steps = [r for r in schedule if r["label"].startswith(DROP)]
    assert steps and all(r["untrained_latency_ms"] >= floor_ms for r in schedule if r not in steps)
    first = steps[0]
    assert first["settings"]["level"] and first["untrained_latency_ms"] < floor_ms
    assert first["settings"]["weight.student"] == 1.0 and first["settings"]["weight.prune"] == 0
    base = study.trials[first["settings"]["from_trial"]]
    assert base.user_attrs["accuracy"] == 0.99  # compressed from a plan within the drop
    plan = next(t for t in study.trials if t.user_attrs.get(ATTR) == first)
    assert plan.params["student.width"] < 1.0
    assert {n: plan.params[n] for n in ("prune.a", "prune.b")} == {
        n: base.params[n] for n in ("prune.a", "prune.b")
    }  # its pruning kept
    # below the floor too, each later step lands inside the bracket of what ran before it
    for n, step in enumerate(schedule):
        if step in steps[1:]:
            before = [r["untrained_latency_ms"] for r in schedule[:n]]
            within = min(ms for ms in before if ms >= 0.09)
            outside = max(ms for ms in before if ms < 0.09)
            assert outside < step["untrained_latency_ms"] < within


def test_without_max_drop_there_is_no_walk() -> None:
    from edgecompress.search.strategies import DROP, Allocate
    from tests.search.test_allocation import _shrinking

    space, profile = _two_section_profile()
    strategy = Allocate()
    strategy._profile = profile
    context = _context(space, _shrinking, budget_ms=0.8, fastest_ms=0.0)
    study = optuna.create_study(directions=["maximize", "minimize"])
    records = _walk(strategy, study, context, 10, line_ms=0.3)
    assert not any(r["label"].startswith(DROP) for r in records)


def test_the_refinement_model_reads_the_alignment_a_plan_ran_with() -> None:
    """A plan that ran with another alignment than the profile's base (unaligned, then aligned
    to 16) is told to the refinement's TPE with the alignment it ran with."""
    from edgecompress.search.strategies import _inner_study
    from edgecompress.spaces import Knob

    align = Knob(name="method.round_to", kind="ordinal", choices=(1, 16), identity=1)
    prune = Knob(name="prune.a", kind="float", low=0.0, high=0.9, step=0.05, identity=0.0)
    space = KnobSpace((prune, align))
    study = optuna.create_study(directions=["maximize", "minimize"])
    for aligned in (0, 1):  # the plans as they ran: unaligned, then aligned to 16
        study.enqueue_trial({"prune.a": 0.5, align.name: aligned})
        trial = study.ask()
        prune.suggest(trial), align.suggest(trial)
        trial.set_user_attr(ATTR, {"label": f"allocation {aligned}", "settings": {"aim": 1.0}})
        trial.set_user_attr("accuracy", 0.9)
        trial.set_user_attr("latency_ms", 1.0)
        study.tell(trial, [0.9, 1.0])
    ran = [t.params[align.name] for t in study.trials]
    inner = _inner_study(study, space, {"prune.a": 0.0, align.name: 0}, 1, 0)
    assert [t.params[align.name] for t in inner.trials] == ran
