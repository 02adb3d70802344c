"""A study's ONNX files in a place every machine reaches (issue 15): an S3 bucket on an
S3-compatible server the test starts itself (moto's server, from PyPI), or a shared folder;
recorded in the study, so that export finds them from another working directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgecompress import EdgeCompressError, export, open_result, search
from edgecompress.search.artifacts import location

from ..conftest import BUCKET  # type: ignore[import-not-found]


def test_a_study_keeps_its_onnx_files_in_an_s3_bucket(s3, tiny, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    storage = f"sqlite:///{workdir / 's.db'}"
    result = search(
        tiny,
        trials=2,
        speedup=0.5,
        storage=storage,
        progress=False,
        strategy="tpe",
        artifacts=f"s3://{BUCKET}/team",
    )
    assert result.meta.artifacts == f"s3://{BUCKET}/team/tiny"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert len(keys) == 2 and all(k.startswith("team/tiny/") for k in keys)  # no probe left
    assert not (workdir / "s.db.artifacts").exists()  # nothing beside the database
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)
    number = int(result.trials["trial"].iloc[-1])
    out = export(tiny, open_result("tiny", storage), Path("m.onnx"), trial=number)
    assert (elsewhere / "m.onnx").stat().st_size > 0 and out is not None  # accuracy re-verified
    with pytest.raises(EdgeCompressError, match="keeps its ONNX files in s3://"):
        search(tiny, trials=3, storage=storage, progress=False, artifacts="s3://other")


def test_a_place_that_cannot_be_written_is_refused_before_any_work(s3, tiny, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(
        EdgeCompressError, match="s3://no-such-bucket/tiny cannot be written"
    ) as refused:
        search(
            tiny,
            trials=2,
            speedup=0.5,
            storage="sqlite:///r.db",
            progress=False,
            artifacts="s3://no-such-bucket",
        )
    assert "test-secret" not in str(refused.value)  # the store's reason, never a credential
    assert not (workdir / "r.db").exists()  # the refused search left no storage behind
    with pytest.raises(EdgeCompressError, match="give a folder"):
        search(tiny, trials=2, speedup=0.5, storage="sqlite:///r.db", artifacts="ftp://x/y")


def test_a_location_is_the_studys_own_folder_or_prefix(tmp_path: Path) -> None:
    assert location(None, "sqlite:///d.db", "s") == str(Path("d.db.artifacts/s").resolve())
    assert location(None, "postgresql://u@h/db", "s") == str(
        Path("edgecompress-artifacts/s").resolve()
    )
    assert location(str(tmp_path), None, "s") == str(tmp_path / "s")
    assert location(f"file://{tmp_path}", None, "s") == str(tmp_path / "s")
    assert location("s3://b", None, "s") == "s3://b/s"
    assert location("s3://b/a/team/", None, "s") == "s3://b/a/team/s"
    with pytest.raises(EdgeCompressError, match="name the bucket"):
        location("s3://", None, "s")


def test_a_file_stored_on_another_machine_fails_its_trial_with_the_reason(tmp_path: Path) -> None:
    """A Ray worker on another node stored its file in a folder of the same name on its own
    disk: the driver does not record a trial whose file it cannot find; it fails it and says
    how to share the folder."""
    import optuna
    from optuna.trial import TrialState

    from edgecompress.search.executors import Loop
    from edgecompress.search.ledger import Ledger
    from edgecompress.search.meta import StudyMeta, write
    from edgecompress.search.trial import Outcome
    from edgecompress.spaces import KnobSpace

    study = optuna.create_study(directions=["maximize", "minimize"])
    write(study, StudyMeta("t", ("accuracy", "latency_ms"), 1.0, 2.0, {}, {}, str(tmp_path)))
    told: list[object] = []
    loop = Loop(Ledger(study, KnobSpace(), ("accuracy", "latency_ms")), lambda t, o: told.append(o))
    trial = study.ask()
    metrics = {"accuracy": 0.9, "latency_ms": 0.5}
    loop.told(trial, Outcome(metrics, artifact="written-elsewhere", notes={"host": "node-b"}))
    frozen = study.trials[0]
    assert frozen.state == TrialState.FAIL and told == [None]
    assert "on node-b" in frozen.user_attrs["error"] and "not shared" in frozen.user_attrs["error"]
