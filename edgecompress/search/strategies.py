"""Strategies: what the search tries next, as plug-ins with a contract as small as a sampler's.

A ``Strategy`` has ``sampler(seed)``, the Optuna sampler for the trials it leaves to Optuna, and
``ask(study, context)``, the next plan to run as Optuna params (or None: the sampler chooses).
``start(study, context)`` runs once before the first trial (a profile to compute). The study's
trials are the only state: a strategy reads what ran from them, so a resumed study goes on where
it stopped, with any strategy. Outcomes are told to the study by the executor, the same way
for every strategy.

- ``tpe``: multi-objective TPE over every knob, from the baselines and three uniform seeds (the
  search before issue 13);
- ``random``: random plans over every knob, from the same seeds;
- ``allocate`` (the default): a sensitivity profile, then per-layer allocations measured within
  the budget, the uniform plan matched to the budget beside them, then refinement in a
  low-dimensional space around the allocations (see ``Allocate``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from edgecompress.errors import EdgeCompressError
from edgecompress.experiment import Experiment
from edgecompress.search.allocation import (
    Allocation,
    allocate,
    compressed_at,
    floor,
    uniform_at,
)
from edgecompress.search.probe import LatencyProbe
from edgecompress.search.sensitivity import Sensitivity, sensitivity
from edgecompress.spaces import Knob, Space, replay
from edgecompress.tasks.metrics import ACCURACY, Metric

ATTR = "allocation"  # the trial attribute an Allocate proposal records


@dataclass(frozen=True)
class Proposal:
    """A plan to run next (Optuna params of the space's knobs) and why (``label``); ``attrs``
    are recorded on the trial."""

    params: dict[str, Any]
    label: str
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """What a strategy may use: the experiment, its space, the budget and the study's
    reference latency, and ``latency``: a plan's latency before training (measured or
    predicted)."""

    experiment: Experiment
    space: Space
    budget_ms: float
    reference_ms: float
    latency: LatencyProbe
    fastest_ms: float = 0.0  # the most compressed plan's latency, where known
    max_drop: float | None = None  # the question: the fastest within this drop of the metric
    progress: Callable[[str], None] | None = None
    metric: Metric = ACCURACY  # the study's metric (its first objective)


class Strategy:
    """The plug-in contract; the base class asks nothing and samples at random."""

    name = "custom"
    uniform_seeds = True  # the study starts with three uniform pruning seeds

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=seed)

    def start(self, study: optuna.Study, context: Context) -> None:
        """Once, before the first trial of a run."""

    def ask(self, study: optuna.Study, context: Context) -> Proposal | None:
        return None


class TPE(Strategy):
    """Multi-objective TPE over every knob (reads each trial's budget constraint)."""

    name = "tpe"

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, constant_liar=True, n_startup_trials=8
            )


class Random(Strategy):
    """Random plans over every knob."""

    name = "random"


class Allocate(Strategy):
    """Sensitivity-guided allocation under the budget, then refinement around it.

    The first proposals are the uniform plan matched to the budget (one global ratio in the
    base precisions, what a user does by hand) and the allocation at the budget; then a ladder
    of allocations at tighter targets, evenly spaced in log latency from the budget down to the
    floor (the fastest plan the profiled knobs reach), which fills the front below the budget
    where a hand sweep's most compressed ratios go; then the uniform plan matched to each rung,
    so that the study is never worse than one global ratio at any of its targets, by
    construction; then a multi-objective TPE over a few parameters of the allocation: the share
    of the budget aimed at, how the damage is weighed (``gamma``), whether precisions are
    allocated or kept at the base, the pruning criterion and channel alignment, and the
    distillation knobs. Each proposal is measured within its target before it is trained.

    Where the budget lies beyond the floor (only students or factorization reach it), the
    proposals are the space compressed at one common level matched to the budget
    (``compressed_at``), then a TPE over the level's weight per section; the ladder is
    recorded in the study (``LADDER_ATTR``), so a resumed study keeps its targets.
    """

    name = "allocate"
    uniform_seeds = False
    RUNG = 0.6  # the ladder's step in latency, about
    MOST_RUNGS = 4
    FLOOR_SLACK = 1.08  # the floor rung aims this far above the floor: the least damage near it
    STARTUP = 4  # random refinements before the inner TPE models them
    REFINE_TRIES = 3  # refinement settings tried for one proposal before the sampler chooses
    # targets sit this far inside their budget: the trained model is measured again, and two
    # measurements of one model differ by a few percent here
    SAFETY = 0.95
    # toward --max-drop's boundary: resolved once the fastest plan within the drop and the next
    # faster one outside it are this close in latency (about the measurement's noise, twice)
    GAP = 1.1
    STEP_TRIES = 3  # targets tried for one step of the walk, each halfway back from the last
    # below the measured floor, pruning is tried only this close to it (the floor is a median
    # of three measurements; further below, only students reach)
    FLOOR_NOISE = 1.25

    def __init__(self) -> None:
        self._profile: Sensitivity | None = None
        self.seed = 0

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """Where no allocation is proposed, the previous search's TPE chooses."""
        self.seed = seed  # the refinement's own sampler follows the study's seed
        return TPE().sampler(seed)

    def start(self, study: optuna.Study, context: Context) -> None:
        self.profile(context)

    def profile(self, context: Context) -> Sensitivity:
        if self._profile is None:
            self._profile = sensitivity(
                context.experiment, context.space, context.latency, progress=context.progress
            )
        return self._profile

    def ask(self, study: optuna.Study, context: Context) -> Proposal | None:
        proposed = {
            t.user_attrs[ATTR]["label"]
            for t in study.get_trials(deepcopy=False)
            if ATTR in t.user_attrs
        }
        ladder = self.ladder(study, context)
        missed = set(ladder.get("missed", []))
        schedule = self._schedule(ladder, context.space)
        for label, settings in schedule:
            if label not in proposed and label not in missed:
                found = self._proposal(label, settings, context, ladder)
                if found is not None:
                    return found
                missed.add(label)  # not proposed again, on resume either
                study.set_user_attr(LADDER_ATTR, {**ladder, "missed": sorted(missed)})
        if context.max_drop is not None:
            toward = self._toward_drop(study, context, ladder)
            if toward is not None:
                return toward
        count = sum(1 for label in proposed if label.startswith("refinement "))
        return self._refine(study, context, ladder, count)

    def _toward_drop(
        self, study: optuna.Study, context: Context, ladder: dict[str, Any]
    ) -> Proposal | None:
        """Where the study asks for the fastest plan within ``max_drop`` of the teacher: the
        next step toward that boundary, from what ran. Between the fastest plan within the
        drop and the next faster allocation outside it (a uniform plan outside says nothing of
        an allocation there), an allocation at their geometric mean latency (the uniform plan
        there, where the allocation ran already); with none faster outside, one ``RUNG``
        faster. Below the ladder's floor (one measured estimate) the allocation and the
        uniform plan are tried all the same, then the fastest plan within the drop with its
        student sections (then its ranks too) compressed to the target (``compressed_at``).
        None when the two are within ``GAP`` of each other (the boundary is known to the
        measurement's noise), when the step would aim over the budget, or when no plan is
        measured within the step's target: the refinement goes on.

        Proposals still running (another worker's step, or a rung of the ladder) count as
        points of the bracket whose side is not known yet: the next step splits the widest of
        the gaps they leave, so two workers walk two points of the bracket at once rather than
        one step and a refinement."""
        trials = study.get_trials(deepcopy=False)
        mine = [
            t for t in trials if str(t.user_attrs.get(ATTR, {}).get("label", "")).startswith(DROP)
        ]
        pending = [  # where the running proposals (steps or not) were measured, untrained
            float(t.user_attrs[ATTR]["untrained_latency_ms"])
            for t in trials
            if t.state in (TrialState.RUNNING, TrialState.WAITING)
            and _finite(t.user_attrs.get(ATTR, {}).get("untrained_latency_ms")) is not None
        ]
        done = []  # (trial, latency, signed metric: higher is better) of the complete trials
        metric = context.metric
        for t in trials:
            latency, value = (_finite(t.user_attrs.get(m)) for m in ("latency_ms", metric.name))
            if t.state == TrialState.COMPLETE and latency is not None and value is not None:
                done.append((t, latency, metric.signed(value)))
        teacher = [a for t, _, a in done if t.user_attrs.get("baseline") == "teacher"]
        if not teacher or context.max_drop is None:
            return None
        line = teacher[0] - context.max_drop - 1e-12
        within = [(t, lat) for t, lat, a in done if a >= line]
        fastest, fastest_ms = min(within, key=lambda p: p[1])
        # the far end: the allocations' (a uniform plan or the sampler's outside the drop at
        # some latency does not say that an allocation there is: on the MLP the uniform plan at
        # the budget fell just outside while an allocation 1.3x faster was within)
        outside = [
            lat
            for t, lat, a in done
            if a < line and lat < fastest_ms and ATTR in t.user_attrs and not _uniform(t)
        ]
        target = _split(fastest_ms, max(outside) if outside else None, pending, self.RUNG)
        if target is None:
            return None
        ceiling = context.budget_ms * self.SAFETY
        if target > ceiling:
            return None
        label = f"{DROP} {len(mine) + 1}"
        ran = {t.user_attrs.get("plan_key") for t in trials}
        for _ in range(self.STEP_TRIES):  # nothing new at the target: halfway back toward it
            found = self._step(label, target, fastest, context, ladder, ran)
            if found is not None:
                return found
            target = math.sqrt(target * fastest_ms)
        return None

    def _step(
        self,
        label: str,
        target: float,
        fastest: optuna.trial.FrozenTrial,
        context: Context,
        ladder: dict[str, Any],
        ran: set[Any],
    ) -> Proposal | None:
        """A plan measured within ``target`` whose key is not in ``ran`` (one that ran already
        would say nothing new): the allocation, else one ratio; below the ladder's floor (a
        measured estimate) too, and then the student sections of the fastest plan within the
        drop (``fastest``) compressed; beyond the floor of pruning alone, the space compressed
        at one level."""
        aim = target / (context.budget_ms * self.SAFETY)
        if not ladder["reach"]:
            tries = [lambda: self._proposal(label, {"level": True, "aim": aim}, context, ladder)]
        else:
            below = {"below_floor": True} if aim < float(ladder["least"]) else {}
            tries = []
            if target * self.FLOOR_NOISE >= float(ladder["floor_ms"]):  # pruning may reach it
                tries = [
                    lambda: self._proposal(label, {"aim": aim, **below}, context, ladder),
                    lambda: self._proposal(
                        label, {"uniform": True, "aim": aim, **below}, context, ladder
                    ),
                ]
            if below:
                tries.append(lambda: self._beyond_floor(label, fastest, target, aim, context))
        for attempt in tries:
            found = attempt()
            if found is not None and replay(context.space, found.params).key not in ran:
                return found
        return None

    def _beyond_floor(
        self,
        label: str,
        base: optuna.trial.FrozenTrial,
        target: float,
        aim: float,
        context: Context,
    ) -> Proposal | None:
        """The plan of trial ``base`` with its student sections (then its ranks too) compressed
        to a common level measured within ``target`` (its pruning and precisions kept)."""
        sections = {k.section for k in context.space.knobs() if k.fastest is not None}
        for weights in ({"student": 1.0}, {"student": 1.0, "rank": 1.0}):
            if not set(weights) & sections:
                continue
            found = compressed_at(
                context.space,
                context.latency,
                target_ms=target,
                base=dict(base.params),
                weights=weights,
            )
            if found is not None:
                settings = {
                    "aim": aim,
                    "level": True,
                    "from_trial": base.number,
                    **{f"weight.{s}": weights.get(s, 0.0) for s in LEVEL_SECTIONS},
                }
                record = {
                    "label": label,
                    "settings": settings,
                    "untrained_latency_ms": found.latency_ms,
                    "predicted_damage": None,
                    "target_ms": found.target_ms,
                }
                return Proposal(found.params, label, {ATTR: record})
        return None

    def ladder(self, study: optuna.Study, context: Context) -> dict[str, Any]:
        """The study's targets, as shares of ``SAFETY * budget``: measured once (the floor),
        then read from the study."""
        stored = study.user_attrs.get(LADDER_ATTR)
        if stored is not None:
            return dict(stored)
        target = context.budget_ms * self.SAFETY
        lowest = floor(self.profile(context), context.space, context.latency)
        reach = lowest.latency_ms <= target  # one measurement near the floor: no slack here
        if reach:
            least = min(1.0, lowest.latency_ms * self.FLOOR_SLACK / target)
        elif context.fastest_ms > 0:  # students and factorization only: the space's floor
            least = min(1.0, context.fastest_ms * self.FLOOR_SLACK / target)
        else:  # the space's floor is not known: no ladder
            least = 1.0
        least = math.ceil(least * 1e4) / 1e4  # the last rung's aim, as labelled
        rungs = round(math.log(least) / math.log(self.RUNG)) if least < 1 else 0
        rungs = max(min(rungs, self.MOST_RUNGS), 1 if least < 0.85 else 0)
        aims = [round(least ** (i / rungs), 4) for i in range(1, rungs + 1)]
        ladder = {"reach": reach, "floor_ms": lowest.latency_ms, "least": least, "aims": aims}
        study.set_user_attr(LADDER_ATTR, ladder)
        return ladder

    def _schedule(self, ladder: dict[str, Any], space: Space) -> list[tuple[str, dict[str, Any]]]:
        aims = list(ladder["aims"])
        if not ladder["reach"]:  # without factorizing first (it is slower on some CPUs), then with
            plain = {"level": True, "weight.rank": 0.0}
            level = [("compressed at budget", {**plain, "aim": 1.0})]
            if any(k.section == "rank" and k.fastest is not None for k in space.knobs()):
                level.append(("compressed and factorized at budget", {"level": True, "aim": 1.0}))
            return level + [
                (f"compressed at {aim:g} x budget", {**plain, "aim": aim}) for aim in aims
            ]
        steps: list[tuple[str, dict[str, Any]]] = [
            ("uniform at budget", {"uniform": True, "aim": 1.0}),
            ("allocation at budget", {"aim": 1.0}),
        ]
        steps += [(f"allocation at {aim:g} x budget", {"aim": aim}) for aim in aims]
        # the uniform plans of the ladder, the floor's first: a hand sweep's fastest ratios
        for aim in aims[-1:] + aims[:-1]:
            steps.append((f"uniform at {aim:g} x budget", {"uniform": True, "aim": aim}))
        return steps

    def _proposal(
        self, label: str, settings: dict[str, Any], context: Context, ladder: dict[str, Any]
    ) -> Proposal | None:
        profile = self.profile(context)
        aim = float(settings["aim"])
        if not settings.get("below_floor"):  # not below the floor, but where the walk asks
            aim = max(aim, float(ladder["least"]))
        target = aim * context.budget_ms * self.SAFETY
        fixed = {k: v for k, v in settings.items() if k in _knob_names(context.space)}
        found: Allocation | None
        if settings.get("level"):
            weights = {s: float(settings.get(f"weight.{s}", 1.0)) for s in LEVEL_SECTIONS}
            top = max(weights.values())
            weights = {s: w / top for s, w in weights.items()} if top > 0 else weights
            found = compressed_at(
                context.space,
                context.latency,
                target_ms=target,
                base=profile.base_params,
                weights=weights,
                fixed=fixed,
            )
        elif settings.get("uniform"):
            found = uniform_at(
                profile, context.space, context.latency, target_ms=target, fixed=fixed
            )
        else:
            found = allocate(
                profile,
                context.space,
                context.latency,
                target_ms=target,
                reference_ms=context.reference_ms,
                fixed=fixed,
                gamma=float(settings.get("gamma", 1.0)),
                precision=bool(settings.get("precision", True)),
            )
        if found is None:
            return None
        record = {
            "label": label,
            "settings": settings,
            "untrained_latency_ms": found.latency_ms,
            "predicted_damage": found.damage if math.isfinite(found.damage) else None,
            "target_ms": found.target_ms,
        }
        return Proposal(found.params, label, {ATTR: record})

    def _refine(
        self, study: optuna.Study, context: Context, ladder: dict[str, Any], count: int
    ) -> Proposal | None:
        """The next refinement (``count`` so far), from the inner TPE over the allocation's
        parameters; at the budget when its aim is out of reach; None (the sampler chooses)
        when ``REFINE_TRIES`` settings found nothing there either."""
        level = not ladder["reach"]
        base = self.profile(context).base_params
        inner = _inner_study(
            study, context.space, base, self.STARTUP, self.seed + count, level, context.metric
        )
        label = f"refinement {count + 1}"
        for _ in range(self.REFINE_TRIES):  # the next suggestions, before the sampler chooses
            trial = inner.ask()
            settings = _suggest(trial, context.space, level)
            found = self._proposal(label, settings, context, ladder)
            if found is None and settings["aim"] < 1.0:  # the aim is out of reach: at the budget
                found = self._proposal(label, {**settings, "aim": 1.0}, context, ladder)
            if found is not None:
                return found
            inner.tell(trial, state=TrialState.FAIL)
        return None


def _uniform(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether ``trial`` ran a uniform plan the strategy proposed (one ratio everywhere)."""
    return bool(trial.user_attrs.get(ATTR, {}).get("settings", {}).get("uniform"))


def _split(within: float, outside: float | None, pending: list[float], rung: float) -> float | None:
    """The next target between the fastest latency ``within`` the drop and the next faster one
    ``outside`` it (None: nothing faster ran; the bracket then reaches ``rung`` times
    ``within``), given the latencies of the steps still running: the geometric middle of the
    widest gap they leave; ``rung * within`` itself when nothing faster ran or runs. None
    when every gap is within ``GAP`` (the caller's test) or nothing is left to split."""
    lowest = outside if outside is not None else within * rung
    if outside is None and not any(p <= lowest * 1.0001 for p in pending):
        return lowest  # one rung faster first: the bracket's far end is not known
    points = sorted({within, lowest, *(p for p in pending if lowest < p < within)})
    if len(points) < 2:
        return None
    gaps = list(zip(points, points[1:], strict=False))
    low, high = max(gaps, key=lambda g: g[1] / g[0])
    if high / low <= Allocate.GAP:
        return None
    return math.sqrt(low * high)


LADDER_ATTR = "allocation_ladder"  # the study attribute holding Allocate's targets
DROP = "toward the drop"  # the label of Allocate's steps toward --max-drop's boundary
LEVEL_SECTIONS = ("prune", "student", "rank")


def _refinement_knobs(space: Space) -> list[Knob]:
    """The space's knobs a refinement varies directly: criterion, alignment, distillation."""
    wanted = ("method.prune_criterion", "method.round_to")
    return [
        k
        for k in space.knobs()
        if k.kind != "fixed" and (k.name in wanted or k.section == "finetune")
    ]


def _knob_names(space: Space) -> set[str]:
    return {k.name for k in _refinement_knobs(space)}


def _suggest(trial: optuna.Trial, space: Space, level: bool = False) -> dict[str, Any]:
    """The refinement's parameters: the aim, and how the allocation weighs damage and
    precision; for a common level (``level``), each section's weight instead."""
    settings: dict[str, Any] = {"aim": trial.suggest_float("aim", 0.1, 1.0, log=True)}
    if level:
        settings["level"] = True
        sections = {k.section for k in space.knobs() if k.fastest is not None}
        for section in LEVEL_SECTIONS:
            if section in sections:
                settings[f"weight.{section}"] = trial.suggest_float(f"weight.{section}", 0.0, 1.0)
    else:
        settings["gamma"] = trial.suggest_float("gamma", 0.5, 2.0, log=True)
        settings["precision"] = trial.suggest_categorical("precision", [True, False])
    for knob in _refinement_knobs(space):
        settings[knob.name] = knob.param(knob.suggest(trial))
    return settings


def _inner_study(
    study: optuna.Study,
    space: Space,
    base: dict[str, Any],
    startup: int,
    seed: int,
    level: bool = False,
    metric: Metric = ACCURACY,
) -> optuna.Study:
    """An in-memory study over the refinement's parameters, holding every finished
    allocation of ``study`` with its metric and latency: its TPE proposes the next.
    ``base``: the profile's base plan, whose values the schedule's allocations kept."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    directions = [metric.direction, "minimize"]
    inner = optuna.create_study(directions=directions, sampler=sampler)  # type: ignore[arg-type]
    probe = optuna.create_study().ask()  # only to learn the parameters' distributions
    _suggest(probe, space, level)
    distributions = probe.distributions
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = t.user_attrs.get(ATTR)
        if not record or record["settings"].get("uniform") or "from_trial" in record["settings"]:
            continue  # one global ratio, or a trial's plan with its students compressed
        if bool(record["settings"].get("level")) != level:
            continue
        # the alignment and criterion the plan ran with (where the sampler or a replayed trial
        # set them otherwise than the profile's base), then what the refinement asked for
        ran = {k: t.params[k] for k in _knob_names(space) if k in t.params}
        full = {**_defaults(space, base), **ran, **record["settings"]}
        params = {k: full[k] for k in distributions if k in full}
        values = [_finite(t.user_attrs.get(m)) for m in (metric.name, "latency_ms")]
        if len(params) != len(distributions) or None in values:
            continue
        inner.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=distributions,
                values=[v for v in values if v is not None],
            )
        )
    return inner


def _defaults(space: Space, base: dict[str, Any]) -> dict[str, Any]:
    """The refinement parameters of the schedule's own allocations (built on ``base``)."""
    defaults: dict[str, Any] = {"aim": 1.0, "gamma": 1.0, "precision": True}
    defaults.update({f"weight.{s}": 1.0 for s in LEVEL_SECTIONS})
    for knob in _refinement_knobs(space):
        if knob.name in base:
            defaults[knob.name] = base[knob.name]
        elif knob.identity is not None:
            defaults[knob.name] = knob.param(knob.identity)
    return defaults


def _finite(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    return float(value) if ok else None


STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (Allocate, TPE, Random)}


def strategy_named(name: str | Strategy | None) -> Strategy:
    """A strategy by name (``allocate`` by default), or the one given."""
    if isinstance(name, Strategy):
        return name
    if name is None:
        return Allocate()
    if name not in STRATEGIES:
        raise EdgeCompressError(
            f"--strategy {name!r} is not known; choose one of {sorted(STRATEGIES)}, or pass a "
            "Strategy instance to search(strategy=...)."
        )
    return STRATEGIES[name]()
