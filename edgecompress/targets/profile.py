"""Targets as files a user can write and share: one folder per device.

    targets/                    (--targets DIR, or $EDGECOMPRESS_TARGETS; default ./targets)
      my-device/
        target.json             the Target's fields: runtime, provider, threads, batch size, ...
        table.csv, table.json   its latency table (see ``targets.table``)
        reference.onnx          the yardstick its table was measured against

``local-cpu`` exists without files (this machine, measured live); building its table writes
its folder like any other.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edgecompress.errors import EdgeCompressError
from edgecompress.targets.table import LatencyTable, load_table
from edgecompress.targets.target import Target

LOCAL = "local-cpu"


def targets_root(root: Path | str | None = None) -> Path:
    return Path(root or os.environ.get("EDGECOMPRESS_TARGETS", "targets"))


@dataclass(frozen=True)
class Profile:
    """A target, its folder, and its table when it has one."""

    target: Target
    folder: Path
    table: LatencyTable | None

    @property
    def reference(self) -> Path:
        return self.folder / "reference.onnx"

    def require_table(self) -> LatencyTable:
        if self.table is None:
            raise EdgeCompressError(
                f"target {self.target.name!r} has no latency table in {self.folder}; build one "
                f"with `edgecompress table build --target {self.target.name}` (this machine) or "
                "`table plan` / `table import` (another device)."
            )
        return self.table


def target_from(data: dict[str, Any], source: Path) -> Target:
    """A Target from a target.json's fields; unknown or bad fields named."""
    known = {f.name for f in fields(Target)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise EdgeCompressError(f"{source}: unknown fields {unknown}; a target has {sorted(known)}")
    try:
        return Target.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise EdgeCompressError(f"{source}: {exc}") from None


def load_profile(name: str, root: Path | str | None = None) -> Profile:
    """``name`` is a folder under the targets root, or a path to a target folder."""
    base = targets_root(root)
    folder = Path(name) if os.sep in name or Path(name).is_absolute() else base / name
    spec = folder / "target.json"
    if not spec.is_file():
        if name == LOCAL:
            return Profile(Target(name=LOCAL), folder, None)
        known = sorted(p.name for p in base.glob("*") if (p / "target.json").is_file())
        raise EdgeCompressError(
            f"no target {name!r}: {spec} does not exist. Targets in {base}: "
            f"{', '.join(known) or 'none'} (and {LOCAL}, built in). Create one with "
            "`edgecompress table import` or `table build`."
        )
    try:
        data = json.loads(spec.read_text())
    except json.JSONDecodeError as exc:
        raise EdgeCompressError(f"{spec}: not JSON ({exc})") from None
    target = target_from(data, spec)
    table = load_table(folder / "table") if (folder / "table.csv").exists() else None
    return Profile(target, folder, table)


def save_profile(
    target: Target, table: LatencyTable, reference: bytes | None, root: Path | str | None = None
) -> Profile:
    """Writes the target's folder: target.json, the table, and the table's reference model
    (without one, a reference left by an earlier table is removed: it is not this table's)."""
    folder = targets_root(root) / target.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "target.json").write_text(json.dumps(target.to_dict(), indent=2) + "\n")
    table.save(folder / "table")
    if reference is not None:
        (folder / "reference.onnx").write_bytes(reference)
    else:
        (folder / "reference.onnx").unlink(missing_ok=True)
    return Profile(target, folder, table)
