"""Two drivers opening one new study: the one that loses the race to create it resumes it
(it died with a raw DuplicatedStudyError, issue 15)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from edgecompress import EdgeCompressError
from edgecompress.search import engine
from edgecompress.search.meta import KEY as META
from edgecompress.search.storage import open_storage
from edgecompress.search.trial import reference_of


def test_the_driver_that_loses_the_race_to_create_resumes(tiny, workdir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    real = engine.create
    calls: list[str] = []

    def another_driver_first(store, name, experiment, meta):  # type: ignore[no-untyped-def]
        calls.append(name)
        real(store, name, experiment, replace(meta, unknown={"by": "the other driver"}))
        return real(store, name, experiment, meta)  # this driver's own create: it lost

    monkeypatch.setattr(engine, "create", another_driver_first)
    ledger = engine.open_ledger(
        tiny,
        storage="sqlite:///race.db",
        study=None,
        budget_ms=None,
        speedup=0.5,
        reference=reference_of(tiny),
        strategy=engine.strategy_named("tpe"),
    )
    assert calls == ["tiny"]
    assert ledger.study.user_attrs[META]["by"] == "the other driver"  # resumed, not recreated
    assert (
        ledger.study.metric_names == ["accuracy", "latency_ms"] == list(tiny.study_objectives)
    )  # optuna-dashboard's labels
    assert len(optuna.get_all_study_names("sqlite:///race.db")) == 1


def test_a_study_without_settings_is_waited_for_only_while_it_is_new(workdir: Path) -> None:
    store = open_storage("sqlite:///w.db", must_exist=False)
    study = optuna.create_study(study_name="s", storage=store)

    def settle() -> None:  # its creator sets the settings a moment after creating it
        time.sleep(0.5)
        study.set_user_attr(META, {"budget_ms": 1.0})

    thread = threading.Thread(target=settle)
    thread.start()
    found = engine._settled("s", store)
    thread.join()
    assert found is not None and found.user_attrs[META] == {"budget_ms": 1.0}
    assert engine._settled("missing", store) is None
    # a study with trials and no settings is someone else's: refused at once
    other = optuna.create_study(study_name="theirs", storage=store)
    other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    started = time.monotonic()
    with pytest.raises(EdgeCompressError, match="not created by edgecompress"):
        engine._settled("theirs", store)
    assert time.monotonic() - started < engine.SETTLE_S / 2


def test_a_driver_counts_the_trials_another_driver_runs_toward_the_total() -> None:
    """Two drivers asked for 10 trials each completed one each past it (issue 15): a trial
    another live driver is running counts toward the total; this driver's own do not count
    twice, and a finished study is left alone."""
    from edgecompress.search.executors import run_in_process
    from edgecompress.search.ledger import Ledger
    from edgecompress.search.study import driver_id
    from edgecompress.spaces import KnobSpace

    study = optuna.create_study()
    study.tell(study.ask(), 1.0)  # one complete
    theirs = study.ask()
    theirs.set_user_attr("driver", "another-host:123:456")  # running on another driver
    study.set_user_attr("heartbeat:another-host:123:456", time.time())  # which is alive
    ledger = Ledger(study, KnobSpace(()), ("accuracy", "latency_ms"))
    assert ledger.running_elsewhere() == 1
    assert ledger.enough(2) and not ledger.enough(3)
    asked: list[int] = []
    run_in_process(ledger, None, None, 2, lambda t, o: asked.append(t.number))  # type: ignore[arg-type]
    assert not asked and len(study.trials) == 2  # nothing started: 1 complete + 1 running
    mine = study.ask()
    mine.set_user_attr("driver", driver_id())
    assert ledger.running_elsewhere() == 1  # its own running trial is not another's
    assert ledger.enough(3, mine=1)


def test_a_driver_killed_since_the_last_check_is_not_counted_on_to_finish() -> None:
    """The survivor of two drivers, one killed a moment ago (after the survivor's last check
    of who is alive), would have counted the dead one's trial toward the total and stopped
    one short (seen with two drivers on PostgreSQL): where only trials running elsewhere make
    up the total, their drivers are checked at once."""
    from edgecompress.search.ledger import Ledger
    from edgecompress.spaces import KnobSpace

    study = optuna.create_study()
    study.tell(study.ask(), 1.0)
    owner = "another-host:123:456"
    theirs = study.ask()
    theirs.set_user_attr("driver", owner)
    study.set_user_attr(f"heartbeat:{owner}", time.time())  # alive at the last check
    ledger = Ledger(study, KnobSpace(()), ("accuracy", "latency_ms"))
    assert ledger.enough(2)  # counted on while it beats
    study.set_user_attr(f"heartbeat:{owner}", 0.0)  # gone since (a driver marks itself so)
    assert not ledger.enough(2)  # checked now, not in INTERVAL_S: its trial is run again
    assert study.trials[theirs.number].state == TrialState.FAIL
    assert [t.state for t in study.trials].count(TrialState.WAITING) == 1


def test_a_driver_on_another_machine_is_alive_while_it_beats_and_then_recovered() -> None:
    """A trial of a driver on another machine is left alone while that driver's heartbeat is
    recent; once it is older than the grace period (or the driver never beat), the trial is
    failed and its plan queued again, once, for a live driver to run (issue 15)."""
    from edgecompress.search.heartbeat import GRACE_S
    from edgecompress.search.ledger import Ledger
    from edgecompress.search.study import recover_interrupted
    from edgecompress.spaces import KnobSpace

    study = optuna.create_study()
    owner = "machine-b:4242:99"
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr("driver", owner)
    silent = study.ask()
    silent.set_user_attr("driver", "machine-c:7:7")  # never beat: taken as gone
    study.set_user_attr(f"heartbeat:{owner}", time.time() - 5)
    assert recover_interrupted(study) == [silent.number]
    ledger = Ledger(study, KnobSpace(()), ("accuracy", "latency_ms"))
    assert ledger.running_elsewhere() == 1  # machine-b's trial still runs
    study.set_user_attr(f"heartbeat:{owner}", time.time() - GRACE_S - 1)  # machine-b died
    ledger._next_recovery = 0.0  # the ledger looks again every INTERVAL_S
    assert ledger.running_elsewhere() == 0
    states = {t.number: t.state for t in study.trials}
    assert states[trial.number] == optuna.trial.TrialState.FAIL
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == trial.number]
    assert len(retries) == 1 and retries[0].state == optuna.trial.TrialState.WAITING
    assert retries[0].system_attrs["fixed_params"] == {"x": trial.params["x"]}
    assert recover_interrupted(study) == []  # nothing left to recover, nothing retried twice


def test_a_search_beats_while_it_runs_and_marks_itself_gone(workdir: Path) -> None:
    from edgecompress.search.heartbeat import Heartbeat, beating

    study = optuna.create_study(storage="sqlite:///h.db", study_name="h")
    with Heartbeat(study, "me:1:1", interval_s=0.05):
        first = study.user_attrs["heartbeat:me:1:1"]
        time.sleep(0.3)
        assert study.user_attrs["heartbeat:me:1:1"] > first  # it beats from its thread
        assert beating(study, "me:1:1")
    assert study.user_attrs["heartbeat:me:1:1"] == 0.0 and not beating(study, "me:1:1")


def test_a_plan_another_trial_completed_or_runs_is_not_run_again() -> None:
    """Two drivers whose samplers agree, or a baseline two drivers queued at once: the second
    copy of a plan is pruned as a duplicate (counted nowhere) and the next plan asked."""
    from edgecompress.search.ledger import Ledger
    from edgecompress.spaces import Knob, KnobSpace

    knob = Knob(name="prune.a", kind="float", low=0.0, high=0.9, step=0.1, identity=0.0)
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    ledger = Ledger(study, KnobSpace((knob,)), ("accuracy", "latency_ms"))
    study.enqueue_trial({"prune.a": 0.5})
    first, plan = ledger.ask()
    study.enqueue_trial({"prune.a": 0.5}, user_attrs={"baseline": "again"})  # a second copy
    second, other = ledger.ask()  # the copy is pruned while the first one runs
    assert other.key != plan.key
    # the copy is the trial after the first (the sampler's next plan may be a copy too, pruned
    # in turn: the plan asked is then later still)
    copy = study.trials[first.number + 1]
    assert copy.state == optuna.trial.TrialState.PRUNED
    assert copy.user_attrs["duplicate_of"] == first.number
    study.tell(first, [0.9, 1.0])  # completed: still a twin
    study.enqueue_trial({"prune.a": 0.5})
    queued = study.trials[-1].number  # the copy, waiting
    third, again = ledger.ask()
    assert again.key != plan.key and study.trials[queued].user_attrs["duplicate_of"] == 0
    assert study.trials[queued].state == optuna.trial.TrialState.PRUNED
