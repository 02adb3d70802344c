"""Where a study keeps its trials' ONNX files, recorded in the study so that every driver,
worker and ``export`` finds them, from any machine that reaches the place.

A location is a folder (absolute; by default beside an SQLite file, ``demo.db.artifacts/``, or
``./edgecompress-artifacts/`` for a database server) or an S3 bucket (``s3://bucket/prefix``,
through Optuna's ``Boto3ArtifactStore``; credentials and the endpoint of an S3-compatible
server such as MinIO come from boto3's own settings: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ...). Each study has its own folder or prefix.

The worker that built a trial's file stores it (``put``), under an id the driver chose when it
asked the trial, so a worker on another machine (a Ray node) needs no disk in common with the
driver, only the store; the driver then links the stored file to the trial (``link``), as
Optuna's ``upload_artifact`` would have, and ``download_artifact`` finds it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import optuna
from optuna.artifacts import Boto3ArtifactStore, FileSystemArtifactStore
from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX
from optuna.trial import TrialState

from edgecompress.errors import EdgeCompressError
from edgecompress.search.storage import DEFAULT_STORAGE, sqlite_path

S3 = "s3://"


def default_location(storage_url: str | None, study: str) -> str:
    """Next to an SQLite file (``demo.db.artifacts/<study>``), else
    ``./edgecompress-artifacts/<study>``, as an absolute path."""
    path = sqlite_path(storage_url or DEFAULT_STORAGE)
    base = Path(f"{path}.artifacts") if path else Path("edgecompress-artifacts")
    return str((base / study).resolve())


def location(given: str | None, storage_url: str | None, study: str) -> str:
    """The study's location for ``--artifacts`` as given (a folder, ``file://`` folder or
    ``s3://bucket/prefix``; None: the default)."""
    if given is None:
        return default_location(storage_url, study)
    if given.startswith(S3):
        bucket, _, prefix = given[len(S3) :].partition("/")
        if not bucket:
            raise EdgeCompressError(
                f"--artifacts {given!r}: name the bucket, as s3://bucket or s3://bucket/prefix"
            )
        prefix = prefix.strip("/")
        return f"{S3}{bucket}/{prefix + '/' if prefix else ''}{study}"
    if "://" in given and not given.startswith("file://"):
        raise EdgeCompressError(
            f"--artifacts {given!r}: give a folder (shared by every machine of the study), "
            "file:///path, or s3://bucket/prefix"
        )
    return str((Path(given.removeprefix("file://")).expanduser() / study).resolve())


class _Prefixed:
    """An artifact store whose ids live under a key prefix of another store's."""

    def __init__(self, store: Any, prefix: str) -> None:
        self.store, self.prefix = store, prefix

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self.store.open_reader(self.prefix + artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.store.write(self.prefix + artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(self.prefix + artifact_id)


def store(where: str) -> Any:
    """The Optuna artifact store of a location."""
    if where.startswith(S3):
        try:
            import boto3  # noqa: F401
        except ImportError:
            raise EdgeCompressError(
                f"artifacts in {where}: S3 needs boto3; pip install 'edgecompress[s3]'"
            ) from None
        bucket, _, prefix = where[len(S3) :].partition("/")
        return _Prefixed(Boto3ArtifactStore(bucket), prefix + "/")
    Path(where).mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(where)


PENDING = "artifact_pending"  # the id a trial's file is to be stored under, set when asked
MIMETYPE = "application/onnx"


def new_id(trial: optuna.Trial) -> str:
    """The id the trial's file will be stored under, recorded on the trial at once (a file
    stored for a trial that never completes is found by it, and removed)."""
    artifact_id = str(uuid.uuid4())
    trial.set_user_attr(PENDING, artifact_id)
    return artifact_id


def put(where: str, artifact_id: str, path: str | os.PathLike[str]) -> None:
    """Stores the file at ``path`` in ``where`` (run by the worker that built it)."""
    with open(path, "rb") as body:
        store(where).write(artifact_id, body)


def missing(where: str, artifact_id: str) -> bool:
    """True when a folder location does not hold ``artifact_id``: the worker that stored it
    wrote to a folder of that name on another machine. (A bucket is the same from every
    machine; its write would have failed on the worker.)"""
    return not where.startswith(S3) and not (Path(where) / artifact_id).is_file()


def link(trial: optuna.Trial, artifact_id: str) -> None:
    """Records the stored file on the trial as ``optuna.artifacts.upload_artifact`` does, so
    that ``get_all_artifact_meta`` and ``download_artifact`` find it."""
    meta = {
        "artifact_id": artifact_id,
        "filename": f"{artifact_id}.onnx",
        "mimetype": MIMETYPE,
        "encoding": None,
    }
    trial.storage.set_trial_system_attr(
        trial._trial_id, ARTIFACTS_ATTR_PREFIX + artifact_id, json.dumps(meta)
    )
    trial.set_user_attr("artifact_id", artifact_id)


def remove_orphans(study: optuna.Study, where: str) -> int:
    """Removes the files stored for trials that failed before the driver linked them (a driver
    killed between a worker's store and its tell, a trial stopped by Ctrl-C). Returns how many
    were removed (in a bucket, how many were asked to be: S3 removes a missing key silently)."""
    target = store(where)
    removed = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        pending = trial.user_attrs.get(PENDING)
        if not pending or trial.user_attrs.get("artifact_id") == pending:
            continue
        if missing(where, pending):  # a folder without it: never stored
            continue
        with contextlib.suppress(Exception):  # noqa: BLE001 - gone already, or unreachable
            target.remove(pending)
            removed += 1
    return removed


def check_writable(where: str) -> None:
    """Writes and removes a small object: a location this machine cannot write is refused
    before any work, with the store's own reason (never a credential)."""
    probe = f"edgecompress-probe-{uuid.uuid4().hex}"
    try:
        target = store(where)
        target.write(probe, io.BytesIO(b"probe"))
        target.remove(probe)
    except EdgeCompressError:
        raise
    except Exception as exc:  # noqa: BLE001 - a missing bucket, no credentials, read-only...
        raise EdgeCompressError(
            f"--artifacts: {where} cannot be written from here ({type(exc).__name__}: "
            f"{str(exc)[:300]}). Every driver, worker and export of the study must reach it: "
            "check the bucket or folder and its credentials, or choose another --artifacts."
        ) from None
