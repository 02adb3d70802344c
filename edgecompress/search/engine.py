"""search(): open or resume the study, check the inputs, run trials until enough are complete."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import onnx
import optuna
import pandas as pd
from tqdm.auto import tqdm

from edgecompress.compress import layer_nodes
from edgecompress.compress.pipeline import calibration_source
from edgecompress.compress.quantize import calibration_batches
from edgecompress.errors import EdgeCompressError
from edgecompress.evaluators import measure_absolute_ms, session
from edgecompress.evaluators.latency import effort, feed_of
from edgecompress.experiment import Experiment
from edgecompress.gate import CpuGate
from edgecompress.inputs import resized
from edgecompress.search.artifacts import check_writable, remove_orphans
from edgecompress.search.artifacts import location as artifact_location
from edgecompress.search.budget import (
    check_budget_numbers,
    check_reachable,
    extreme_plans,
    fastest_reachable_ms,
    resolve_budget,
)
from edgecompress.search.costing import Costing, costing_for
from edgecompress.search.executors import run_in_process
from edgecompress.search.front import Result, load_result
from edgecompress.search.heartbeat import Heartbeat
from edgecompress.search.ledger import Ledger, now
from edgecompress.search.meta import StudyMeta, has_meta, read, update
from edgecompress.search.probe import LatencyProbe
from edgecompress.search.recost import remeasure_front
from edgecompress.search.sensitivity import cached, sensitivity
from edgecompress.search.storage import DEFAULT_STORAGE, open_storage, sqlite_path
from edgecompress.search.strategies import Context, Strategy, strategy_named
from edgecompress.search.study import (
    check_costing,
    check_resume,
    create,
    driver_id,
    ensure_baselines,
    recover_interrupted,
    signature,
)
from edgecompress.search.trial import Outcome, Reference, reference_of
from edgecompress.spaces import AutoSpace, Space, describe
from edgecompress.targets import Target, describe_device


def space_of(experiment: Experiment, reference: Reference) -> Space:
    """The experiment's space: a Space as given, or an AutoSpace (``None``: the default one)
    built from the model and its ONNX export."""
    space = AutoSpace() if experiment.space is None else experiment.space
    if isinstance(space, AutoSpace):
        try:
            space = space.build(
                experiment.model().eval(),
                experiment.example_input,
                finetune=experiment.task.finetune,
                exclude=experiment.exclude,
                quantizable=list(layer_nodes(onnx.load_from_string(reference.onnx))),
                objectives=experiment.study_objectives,
                target=experiment.target,
                student=experiment.student,
                distillation=experiment.task.distillation_reads,
            )
        except Exception as exc:  # noqa: BLE001 - torch-pruning cannot trace the model, ...
            raise EdgeCompressError(
                f"Experiment {experiment.name!r}: no search space could be built from the model "
                f"({type(exc).__name__}: {exc}). Name the layers to leave alone in "
                "Experiment.exclude, or give Experiment.space."
            ) from None
    if not isinstance(space, Space):
        raise EdgeCompressError(
            f"Experiment.space is a {type(space).__name__}; it must be an AutoSpace(...), a Space "
            "(with knobs() and sample(trial)), or None for the default AutoSpace()."
        )
    unbuildable = [k.name for k in space.knobs() if k.kind != "fixed" and k.identity is None]
    if unbuildable:
        raise EdgeCompressError(
            f"Experiment.space: knobs {unbuildable} have no identity (the value that leaves the "
            "model unchanged), so the uncompressed baseline cannot be built. Set Knob.identity."
        )
    return space


def checked_reference(experiment: Experiment) -> Reference:
    """The experiment validated, and its model exported (a clear error if it cannot be)."""
    experiment.validate()
    try:
        reference = reference_of(experiment)
    except Exception as exc:  # noqa: BLE001 - the user's model does not export
        raise EdgeCompressError(
            f"Experiment {experiment.name!r}: the model cannot be exported to ONNX "
            f"({type(exc).__name__}: {str(exc)[:300]}). Every candidate is deployed as ONNX; "
            "make the model exportable with torch.onnx.export first."
        ) from None
    _check_dynamic(experiment, reference)
    # static quantization calibrates on the task's batches: checked now, not in a trial
    task = experiment.task
    model = onnx.load_from_string(reference.onnx)
    calibration_batches(calibration_source(experiment), model, task.calibration_samples)
    return reference


def _check_dynamic(experiment: Experiment, reference: Reference) -> None:
    """The exported model runs in ONNX Runtime at half and twice the example's size along each
    dynamic axis (the exporter may have fixed a size the model computes from its input)."""
    if not experiment.inputs.axes:
        return
    sess = session(reference.onnx)
    for label, size, other, changed in resized(experiment.inputs, experiment.example_input):
        try:
            sess.run(None, feed_of(sess, experiment.inputs.named(changed)))
        except Exception as exc:  # noqa: BLE001 - the exported graph fixed that size
            raise EdgeCompressError(
                f"Experiment {experiment.name!r}: the exported model rejects {label!r} at size "
                f"{other} (the example's {size}) in ONNX Runtime, although PyTorch takes it "
                f"({type(exc).__name__}: {str(exc)[:200]}): the ONNX exporter fixed a size the "
                "model computes from its input (e.g. a reshape to Python numbers). Compute it "
                "from tensor shapes, or leave that dimension out of dynamic_axes."
            ) from None


def space_report(experiment: Experiment) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What a search of ``experiment`` would vary (knobs), and the layers it leaves alone."""
    knobs, skipped, _ = space_and_dominated(experiment)
    return knobs, skipped


def space_and_dominated(
    experiment: Experiment,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]] | None]:
    """``space_report``'s knobs and layers left alone, and the options the sensitivity profile
    found dominated on this machine (``Sensitivity.dominated``), read from the profile cached
    by an earlier search or ``profile`` (None when there is none: nothing is measured)."""
    reference = checked_reference(experiment)
    space = space_of(experiment, reference)
    skipped = [s.to_dict() for s in getattr(space, "skipped", ())]
    found = cached(experiment, space, LatencyProbe(experiment, reference, 1.0))
    return describe(space), skipped, None if found is None else found.dominated()


def open_ledger(
    experiment: Experiment,
    *,
    storage: str | None,
    study: str | None,
    budget_ms: float | None,
    speedup: float | None,
    reference: Reference,
    costing: Costing | None = None,
    asked_costing: bool = False,
    screen_asked: bool = False,
    strategy: Strategy | None = None,
    max_drop: float | None = None,
    artifacts: str | None = None,
    metric_asked: bool = False,
) -> Ledger:
    """Resume the study (its settings checked) or create it (reference measured, budget checked).

    A resumed study keeps the metric it was created with when none was asked
    (``metric_asked`` False) and its task scores it: ``ledger.context.experiment`` is then the
    experiment optimising that metric.

    A resumed study keeps the latency source it was created with; ``asked_costing``: the caller
    named one (a target, a latency source, screening), which must then be the stored one.
    ``strategy`` (default ``allocate``) proposes the plans; any strategy can resume any study."""
    strategy = strategy or strategy_named(None)
    space = space_of(experiment, reference)
    name = study or experiment.name
    file = sqlite_path(storage or DEFAULT_STORAGE)
    created = file is not None and not file.exists()
    store = open_storage(storage, must_exist=False)
    existing = _settled(name, store)
    if existing is None:
        try:
            meta = new_study_meta(
                experiment, space, budget_ms, speedup, reference, storage, name, costing, artifacts
            )
            create(store, name, experiment, meta)
        except optuna.exceptions.DuplicatedStudyError:
            # another driver created it since we looked: this one resumes it
            existing = _settled(name, store)
            if existing is None:
                raise EdgeCompressError(
                    f"study {name!r} was created and deleted by another driver while this one "
                    "started; run again."
                ) from None
        except EdgeCompressError:
            _remove_if_empty(store, storage, created)
            raise
    if existing is not None:
        meta = read(existing)
        if not metric_asked:  # a resumed study keeps its metric (another driver's new one too)
            stored_metric = meta.metric_name
            if stored_metric != experiment.metric.name and stored_metric in (
                experiment.task.metric_names
            ):
                experiment = experiment.with_metric(stored_metric)
                check_max_drop(max_drop, stored_metric)
        sig = signature(experiment, space)
        wanted = None
        if budget_ms is not None or speedup is not None:
            wanted, _ = resolve_budget(budget_ms, speedup, meta.reference_latency_ms)
        check_resume(existing, sig, wanted)
        check_artifacts(meta.artifacts, artifacts, storage, name)
        if asked_costing:
            check_costing(dict(meta.costing) if meta.costing else None, costing, screen_asked)
    if max_drop is not None and meta.max_drop != max_drop:  # the question may change
        meta = update(optuna.load_study(study_name=name, storage=store), max_drop=max_drop)
    # a new seed per run of the study, or a resume would replay the same random plans
    runs = len(store.get_all_trials(store.get_study_id_from_name(name), deepcopy=False))
    loaded = optuna.load_study(
        study_name=name, storage=store, sampler=strategy.sampler(experiment.seed + runs)
    )
    recover_interrupted(loaded)
    remove_orphans(loaded, meta.artifacts)  # files stored for trials that never completed
    ensure_baselines(loaded, space, uniform=strategy.uniform_seeds)
    stored = Costing.from_dict(dict(meta.costing)) if meta.costing else None
    context = Context(
        experiment=experiment,
        space=space,
        budget_ms=meta.budget_ms,
        reference_ms=meta.reference_latency_ms,
        latency=LatencyProbe(experiment, reference, meta.reference_latency_ms, stored),
        fastest_ms=meta.fastest_ms,
        max_drop=meta.max_drop,
        metric=experiment.metric,
    )
    return Ledger(loaded, space, experiment.study_objectives, strategy, context, experiment.seed)


def check_artifacts(stored: str, given: str | None, storage: str | None, name: str) -> None:
    """A resumed study keeps its artifacts where it was created: another ``--artifacts`` is
    refused (its trials' files are in the first place)."""
    if given is not None and artifact_location(given, storage, name) != stored:
        raise EdgeCompressError(
            f"study {name!r} keeps its ONNX files in {stored}; resume it without --artifacts or "
            "with the same one, or start a new --study."
        )


SETTLE_S = 10.0  # how long a study without trials may lack its settings: its creator's moment


def _settled(name: str, store: Any) -> optuna.Study | None:
    """The study named ``name`` with its edgecompress settings, or None if there is none. A
    driver that created it a moment ago sets them just after creating it: a study without
    settings and without trials is waited for, up to ``SETTLE_S``; one with trials but no
    settings was not created by edgecompress."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        try:
            study = optuna.load_study(study_name=name, storage=store)
        except KeyError:
            return None
        if has_meta(study):
            return study
        if study.get_trials(deepcopy=False) or time.monotonic() > deadline:
            raise EdgeCompressError(
                f"study {name!r} exists but was not created by edgecompress; "
                "pass another --study name."
            )
        time.sleep(0.2)


def _remove_if_empty(store: Any, storage: str | None, created: bool) -> None:
    """A refused search leaves no storage behind: the SQLite file it created is removed when
    it holds no study (another driver may have created one in it meanwhile)."""
    file = sqlite_path(storage or DEFAULT_STORAGE)
    if not created or file is None or store.get_all_studies():
        return
    with contextlib.suppress(Exception):
        store.remove_session()
    file.unlink(missing_ok=True)


def new_study_meta(
    experiment: Experiment,
    space: Space,
    budget_ms: float | None,
    speedup: float | None,
    reference: Reference,
    storage: str | None,
    name: str,
    costing: Costing | None = None,
    artifacts: str | None = None,
) -> StudyMeta:
    """A new study's settings: the reference measured (or predicted from the table), the
    budget resolved and checked reachable, the artifact location checked writable."""
    resolve_budget(budget_ms, speedup, 1.0)  # refuse bad budget arguments before measuring
    where = artifact_location(artifacts, storage, name)
    check_writable(where)  # a bucket or folder this machine cannot write: refused now
    table_only = costing is not None and costing.latency == "table"
    if costing is not None and costing.latency == "table":
        reference_ms = costing.predict_model(experiment, reference.onnx).latency_ms
        budget, speedup = resolve_budget(budget_ms, speedup, reference_ms)
        fastest = min(costing.predict_plan(experiment, p).latency_ms for p in extreme_plans(space))
    else:
        with CpuGate().measure():
            reference_ms = measure_absolute_ms(
                reference.onnx,
                reference.feed,
                threads=experiment.target.threads,
                runtime=experiment.target.runtime,
            )
        budget, speedup = resolve_budget(budget_ms, speedup, reference_ms)
        fastest = fastest_reachable_ms(experiment, space, reference, reference_ms)
        if costing is not None:  # table ms -> the ms of this study's measurements
            predicted = costing.predict_model(experiment, reference.onnx).latency_ms
            costing = costing.corrected(reference_ms / predicted)
    check_reachable(budget, fastest, reference_ms)
    return StudyMeta(
        costing=costing.to_dict() if costing else None,
        experiment=experiment.name,
        experiment_ref=experiment.ref,
        objectives=tuple(experiment.study_objectives),
        metric=experiment.metric.to_dict(),
        budget_ms=budget,
        speedup=speedup,
        reference_latency_ms=reference_ms,
        fastest_ms=fastest,
        target=target_of(experiment, costing).to_dict(),
        device=costing.table.header["device"]
        if costing is not None and table_only
        else describe_device(),
        artifacts=where,
        # the share of its rounds each latency measurement took (EDGECOMPRESS_MEASURE_EFFORT)
        measure_effort=effort(),
        signature=signature(experiment, space),
    )


@contextmanager
def _profile_bar(progress: bool) -> Iterator[Callable[[str], None]]:
    """A progress bar for the points of a sensitivity profile; yields the step callback."""
    with tqdm(desc="profile", unit="point", disable=not progress, dynamic_ncols=True) as bar:

        def step(what: str) -> None:
            bar.update(1)
            bar.set_postfix_str(what[:60])

        yield step


def _start(strategy: Strategy, ledger: Ledger, progress: bool) -> None:
    """The strategy's preparation (a sensitivity profile: minutes, once), with a progress bar."""
    assert ledger.context is not None
    with _profile_bar(progress) as step:
        strategy.start(ledger.study, replace(ledger.context, progress=step))


def profile_report(experiment: Experiment, *, progress: bool = True) -> pd.DataFrame:
    """The experiment's sensitivity profile on its target, measured here (or from the cache):
    one row per knob and value, with the damage (the task's divergence from the teacher's
    outputs, untrained) and the latency it saves against the base plan (``saved_ms``,
    ``saved_pct``). ``attrs``:
    ``reference_ms``, ``base_ms``, and ``bases``, the precisions and alignments the base was
    chosen among, with their measured latency ratios; ``dominated``, the options that pay
    nothing here (``Sensitivity.dominated``)."""
    reference = checked_reference(experiment)
    space = space_of(experiment, reference)
    with CpuGate().measure():
        reference_ms = measure_absolute_ms(
            reference.onnx,
            reference.feed,
            threads=experiment.target.threads,
            runtime=experiment.target.runtime,
        )
    probe = LatencyProbe(experiment, reference, reference_ms)
    with _profile_bar(progress) as step:
        found = sensitivity(experiment, space, probe, progress=step)
    frame = pd.DataFrame(found.rows(reference_ms))
    frame["saved_pct"] = 100 * frame["saved_ms"] / (found.base_ratio * reference_ms)
    frame.attrs.update(
        reference_ms=reference_ms,
        base_ms=found.base_ratio * reference_ms,
        bases=found.bases,
        dominated=found.dominated(),
    )
    return frame


def target_of(experiment: Experiment, costing: Costing | None) -> Target:
    """The target a study's latencies are for: the experiment's, named after the table's."""
    return experiment.target if costing is None else replace(experiment.target, name=costing.target)


def search(
    experiment: Experiment,
    *,
    trials: int,
    budget_ms: float | None = None,
    speedup: float | None = None,
    workers: int = 1,
    storage: str | None = None,
    study: str | None = None,
    ray_address: str | None = None,
    progress: bool = True,
    target: str | None = None,
    latency: str | None = None,
    screen: bool | None = None,
    targets: str | None = None,
    strategy: str | Strategy | None = None,
    max_drop: float | None = None,
    timeout_s: float | None = None,
    artifacts: str | None = None,
    metric: str | None = None,
) -> Result:
    """Run (or resume) the study until ``trials`` trials are complete; return its result.
    Trials another live driver of the same study is running count toward ``trials`` (they
    will complete), so several drivers on one study do not overshoot it.

    ``trials`` counts all completed trials of the study, the two baselines (the teacher, and
    in int8) and the three uniform seeds (one pruning ratio for every group) included; plans
    screened out (predicted over the budget, never trained) do not count.

    ``target`` names the device profile (default: the experiment's target, ``local-cpu``);
    ``latency`` is ``"live"`` (measured here; the default for this machine) or ``"table"``
    (predicted from the target's table; the default for another device); ``screen`` (default:
    on when the target has a table) skips plans predicted clearly over the budget. ``targets``
    is the folder of target profiles (default ``./targets``). ``strategy`` is what proposes
    the plans: ``"allocate"`` (the default), ``"tpe"``, ``"random"``, or a ``Strategy``.
    ``metric`` names the task's metric the study optimises (``--metric``; default the task's
    own, ``task.metric``; a resumed study keeps the metric it was created with).
    ``max_drop`` asks for the fastest model within that drop of the teacher's validation
    metric (in its units: 0.01 is one accuracy point; for an error, how much larger it may be)
    instead of the best one within the budget: it decides what
    ``Result.best()`` and ``export --best`` pick, and the ``allocate`` strategy walks toward
    that line after its ladder (bisecting between the fastest plan within the drop
    and the next faster one outside it, past the pruning floor with students).
    ``artifacts`` is where the trials' ONNX files go (a folder every machine of the study
    shares, or ``s3://bucket/prefix``; default beside an SQLite file, else
    ``./edgecompress-artifacts``), recorded in the study for every driver and ``export``.
    ``timeout_s`` limits the search's wall time: once it has passed (counted from this call,
    the sensitivity profile included), no trial starts; those running finish, everything is
    kept, and ``Result.stopped`` says how far the search got (run it again to resume).
    """
    started = now()
    if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s > 0):
        raise EdgeCompressError(
            f"--timeout must be a positive time such as 90s, 30m or 2h, got {timeout_s}"
        )
    if trials < 1:
        raise EdgeCompressError(f"--trials must be >= 1, got {trials}")
    if workers < 1:
        raise EdgeCompressError(f"--workers must be >= 1, got {workers}")
    if metric is not None:
        experiment = experiment.with_metric(metric)
    check_max_drop(max_drop, experiment.metric.name)
    parallel = workers > 1 or ray_address is not None
    if parallel and experiment.ref is None:
        raise EdgeCompressError(
            "running trials on Ray needs the experiment as an import path FILE.py:NAME, so that "
            "workers import it themselves: load it with edgecompress.load_experiment(...), or "
            "use workers=1."
        )
    check_budget_numbers(budget_ms, speedup)  # before any work
    chosen = strategy_named(strategy)
    reference = checked_reference(experiment)
    costing = costing_for(experiment, target, latency, screen, targets)
    ledger = open_ledger(
        experiment,
        storage=storage,
        study=study,
        budget_ms=budget_ms,
        speedup=speedup,
        reference=reference,
        costing=costing,
        asked_costing=any(x is not None for x in (target, latency, screen)),
        screen_asked=screen is not None,
        strategy=chosen,
        max_drop=max_drop,
        artifacts=artifacts,
        metric_asked=metric is not None,
    )
    assert ledger.context is not None
    experiment = ledger.context.experiment  # a resumed study's metric
    ledger.deadline = None if timeout_s is None else started + timeout_s
    _start(chosen, ledger, progress)
    done = ledger.completed()
    bar = tqdm(
        total=trials,
        initial=min(done, trials),
        desc=f"search {ledger.study.study_name}",
        unit="trial",
        disable=not progress,
        dynamic_ncols=True,
    )

    def on_done(trial: optuna.Trial, outcome: Outcome | None) -> None:
        if outcome is not None and not outcome.screened:
            bar.update(1)
        best = load_result(ledger.study).best()
        name = experiment.metric.name
        bar.set_postfix_str(
            f"best feasible: {name} {best[name]:.4g} at {best['latency_ms']:.4f} ms "
            f"(#{best['trial']})"
            if best is not None
            else f"no feasible trial yet (budget {ledger.budget_ms:.4f} ms)"
        )

    try:
        with Heartbeat(ledger.study, driver_id()):  # other machines' drivers see this one live
            if parallel:
                from edgecompress.search.ray_executor import run_on_ray

                run_on_ray(
                    ledger, experiment, trials, on_done, workers=workers, address=ray_address
                )
            else:
                run_in_process(ledger, experiment, reference, trials, on_done)
    finally:
        bar.close()
    remeasure_front(ledger.study, experiment, reference)
    result = load_result(ledger.study)
    complete = ledger.completed()
    if complete < trials and ledger.out_of_time():
        result = replace(
            result,
            stopped=f"the time limit of {duration(timeout_s or 0)} passed: {complete} of "
            f"{trials} trials are complete, every one kept; run the search again to resume",
        )
    return result


def check_max_drop(max_drop: float | None, metric: str) -> None:
    """``--max-drop`` is a finite drop >= 0 in the metric's units (below 1 for accuracy)."""
    if max_drop is None:
        return
    bounded = metric == "accuracy"
    if not (math.isfinite(max_drop) and max_drop >= 0) or (bounded and max_drop >= 1):
        units = "0 <= drop < 1; 0.01 is one point" if bounded else "a finite number >= 0"
        raise EdgeCompressError(
            f"--max-drop is how much worse than the teacher's {metric} a model may be, in the "
            f"metric's units ({units}), got {max_drop}"
        )


def duration(seconds: float) -> str:
    """``seconds`` as a person says it: 45s, 30m, 2h, 1h30m."""
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)
