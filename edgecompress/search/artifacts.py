"""Where a study keeps its trials' ONNX files, recorded in the study so that every driver,
worker and ``export`` finds them, from any machine that reaches the place.

A location is a folder (absolute; by default beside an SQLite file, ``demo.db.artifacts/``, or
``./edgecompress-artifacts/`` for a database server) or an S3 bucket (``s3://bucket/prefix``,
through Optuna's ``Boto3ArtifactStore``; credentials and the endpoint of an S3-compatible
server such as MinIO come from boto3's own settings: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ...). Each study has its own folder or prefix.

Workers leave a trial's file in a staging folder for the driver to store: inside the study's
folder, or, for a bucket, in a folder of this machine's temporary directory.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import uuid
from pathlib import Path
from typing import Any, BinaryIO

from optuna.artifacts import Boto3ArtifactStore, FileSystemArtifactStore

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


def staging(where: str, study: str) -> Path:
    """Where workers leave a trial's ONNX file for the driver to store."""
    if where.startswith(S3):  # one folder per bucket location, whatever the study's name
        digest = hashlib.sha256(where.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / "edgecompress-staging" / f"{study}-{digest}"
    return Path(where) / "staging"


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
