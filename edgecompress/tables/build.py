"""``table build``: a bundle for the experiment's space, measured here, imported as a target.

The work lives in ``targets/NAME/build/`` (the bundle, and ``device.csv`` growing row by row),
so an interrupted or time-limited build goes on where it stopped when run again.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from edgecompress.errors import EdgeCompressError, mismatch
from edgecompress.experiment import Experiment
from edgecompress.spaces import Space
from edgecompress.tables.bundle import Bundle, write_bundle
from edgecompress.targets.imports import Coverage, read_run
from edgecompress.targets.profile import Profile, save_profile, targets_root
from edgecompress.targets.runner import run_bundle

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Built:
    profile: Profile
    coverage: Coverage
    complete: bool
    micro_models: int
    seconds: float


def build_table(
    experiment: Experiment,
    space: Space,
    name: str,
    *,
    root: Path | str | None = None,
    levels: int = 9,
    random: int = 40,
    whole: int = 150,
    time_limit_s: float | None = None,
    progress: Progress | None = None,
) -> Built:
    start = time.monotonic()
    work = targets_root(root) / name / "build"
    bundle = work / "bundle"
    if bundle.exists() and not (bundle / "bundle.json").exists():
        shutil.rmtree(bundle)  # interrupted while being written: it is rebuilt the same way
    if bundle.exists():
        _check_same(bundle, experiment, levels, random, whole)
    if not bundle.exists():
        made: Bundle = write_bundle(
            experiment,
            space,
            bundle,
            levels=levels,
            random=random,
            whole=whole,
            time_limit_s=time_limit_s,
            progress=(lambda i, n: progress("plans", i, n)) if progress else None,
        )
        if not made.complete:
            shutil.rmtree(bundle)
            raise EdgeCompressError(
                f"the time limit ran out while finding the space's kernels ({made.micro_models}"
                f" so far); nothing of target {name!r} was written. Raise --time-limit, or "
                "lower --levels / --random / --whole."
            )
    left = None if time_limit_s is None else max(time_limit_s - (time.monotonic() - start), 1.0)
    header = run_bundle(
        bundle,
        work / "device.csv",
        threads=experiment.target.threads,
        time_limit_s=left,
        progress=(lambda i, n: progress("kernels", i, n)) if progress else None,
    )
    table, coverage = read_run(work / "device.csv", manifest=bundle / "manifest.csv")
    target = replace(experiment.target, name=name)
    profile = save_profile(target, table, (bundle / "reference.onnx").read_bytes(), root)
    micro = len(coverage.missing) + coverage.rows
    return Built(profile, coverage, bool(header["complete"]), micro, time.monotonic() - start)


def _check_same(bundle: Path, experiment: Experiment, levels: int, random: int, whole: int) -> None:
    """A build folder goes on only with the experiment and enumeration it was started with."""
    meta = json.loads((bundle / "bundle.json").read_text())
    if "whole" not in meta:
        raise EdgeCompressError(
            f"{bundle.parent} holds a build from an older version of edgecompress (no whole "
            f"models to calibrate on); remove {bundle.parent} and build again."
        )
    now = {
        "experiment": experiment.ref or experiment.name,
        "levels": levels,
        "random": random,
        "whole": whole,
    }
    differ = {k: (meta.get(k), v) for k, v in now.items() if meta.get(k) != v}
    if differ:
        was, asked = mismatch(differ)
        raise EdgeCompressError(
            f"{bundle.parent} holds a build started with {was}; asked now: {asked}. Run the "
            f"same command as before to finish it, or remove {bundle.parent} to start a new "
            "build (its measurements are lost)."
        )
