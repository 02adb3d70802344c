"""Opening Optuna storages and studies, with clear errors for the ways that goes wrong."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
from optuna.storages import BaseStorage

from edgecompress.errors import EdgeCompressError
from edgecompress.search.meta import KEY, has_meta

DEFAULT_STORAGE = "sqlite:///edgecompress.db"

optuna.logging.set_verbosity(optuna.logging.WARNING)


_PASSWORD = re.compile(r"(://[^:/@\s]*:)([^@\s]+)(@)")


def redacted(text: str) -> str:
    """``text`` with the password of every URL in it (``scheme://user:PASSWORD@host``) masked:
    a storage URL is shown in errors, and its password must never be."""
    return _PASSWORD.sub(r"\1***\3", text)


def sqlite_path(url: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(url[len(prefix) :]) if url.startswith(prefix) else None


def open_storage(url: str | None, *, must_exist: bool) -> BaseStorage:
    """The storage at ``url`` (any Optuna storage URL; default an SQLite file here)."""
    url = url or DEFAULT_STORAGE
    path = sqlite_path(url)
    if path is not None:
        if must_exist and not path.exists():
            raise EdgeCompressError(
                f"storage {url!r}: no such file {path.resolve()}. Run `edgecompress search` "
                "first, or pass the --storage the search used."
            )
        if path.exists() and path.stat().st_size and not _is_sqlite(path):
            raise EdgeCompressError(
                f"storage {url!r}: {path} is not an SQLite database (corrupt or another kind "
                "of file). It was left untouched; pass another --storage path."
            )
    try:
        return optuna.storages.get_storage(url)
    except Exception as exc:  # noqa: BLE001 - any driver error means the URL cannot be opened
        shown = redacted(str(exc))
        password = _PASSWORD.search(url)
        if password:  # a driver may quote it alone
            shown = shown.replace(password.group(2), "***")
        raise EdgeCompressError(
            f"storage {redacted(url)!r} cannot be opened ({type(exc).__name__}: {shown[:200]}). "
            "Give an Optuna storage URL such as sqlite:///study.db or "
            "postgresql://user@host/db, and check that the database is reachable."
        ) from None


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def study_names(storage: BaseStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def load_existing(name: str, storage: BaseStorage, url: str | None) -> optuna.Study:
    """An existing study, or an error listing the studies that exist."""
    names = study_names(storage)
    if name not in names:
        listed = ", ".join(names) if names else "none"
        raise EdgeCompressError(
            f"no study named {name!r} in storage {redacted(url or DEFAULT_STORAGE)!r}. "
            f"Studies there: {listed}. Pass --study with one of them."
        )
    study = optuna.load_study(study_name=name, storage=storage)
    if not has_meta(study):
        raise EdgeCompressError(
            f"study {name!r} was not created by edgecompress (it has no {KEY!r} settings); "
            "use another --study name."
        )
    return study
