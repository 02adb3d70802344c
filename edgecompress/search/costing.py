"""A target's latency table in a search: the latency objective, screening, residuals, re-costing.

- ``latency="table"``: a trial's latency is its deployable file's prediction from the table
  (any device; nothing is timed). ``latency="live"``: measured here (the local target only),
  with the prediction recorded beside it when the target has a table.
- Screening: before anything is trained, a plan is built without fine-tuning (seconds) and
  predicted; a plan clearly over the budget (its estimate less two standard deviations still
  over it; the deviation includes the calibration's cross-validated spread, see
  ``targets.calibrate``, and without one the estimate must also be 10% over) is recorded as
  pruned with its estimate, and never fine-tuned.
- In a live search the table's milliseconds are converted to the study's by ``correction``:
  the uncompressed model measured now over its prediction. At the end the front is re-measured
  live, each trial's residual (measured / predicted) recorded, and their median folded into
  the correction that screening uses when the study resumes.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgecompress.experiment import Experiment
from edgecompress.plan import Plan
from edgecompress.tables.predict import build_for_latency, predict_file
from edgecompress.targets import describe_device
from edgecompress.targets.profile import Profile
from edgecompress.targets.table import LatencyTable, Prediction, load_table

SOURCES = ("live", "table")
MARGIN = 0.10


@dataclass(frozen=True)
class Costing:
    """How a study uses its target's table; stored with the study, handed to every worker."""

    target: str
    folder: str  # the target's folder, holding table.csv/.json
    latency: str  # "live" or "table"
    screen: bool
    correction: float = 1.0  # the study's ms per table ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Costing:
        return cls(**data)

    @property
    def table(self) -> LatencyTable:
        return _table(self.folder)

    def _scaled(self, p: Prediction) -> Prediction:
        c = self.correction
        return Prediction(p.latency_ms * c, p.uncertainty_ms * c, p.interpolated)

    def predict_model(self, experiment: Experiment, model: bytes) -> Prediction:
        return self._scaled(predict_file(self.table, model, experiment))

    def predict_plan(self, experiment: Experiment, plan: Plan) -> Prediction:
        with tempfile.TemporaryDirectory() as tmp:
            model = build_for_latency(experiment, plan, Path(tmp))
        return self.predict_model(experiment, model)

    def over_budget(self, prediction: Prediction, budget_ms: float) -> bool:
        optimistic = prediction.latency_ms - 2 * prediction.uncertainty_ms
        # a table without a cross-validated calibration does not know its own error: the
        # estimate must then be more than MARGIN over, too
        known = self.table.calibration.residual_pct > 0
        return optimistic > budget_ms * (1.0 if known else 1 + MARGIN)

    def corrected(self, factor: float) -> Costing:
        return replace(self, correction=self.correction * factor)


@lru_cache(maxsize=4)
def _table(folder: str) -> LatencyTable:
    return load_table(Path(folder) / "table")


def measured_here(profile: Profile) -> bool:
    """Whether the profile describes this machine (so it can also be measured live)."""
    if profile.table is None:
        return profile.target.name == "local-cpu"
    return bool(profile.table.header["device"].get("cpu_model") == describe_device()["cpu_model"])


def costing_for(
    experiment: Experiment,
    target: str | None,
    latency: str | None,
    screen: bool | None,
    targets: str | None,
) -> Costing | None:
    """How a new search uses its target's table (None: live measurement alone), checked."""
    from edgecompress.errors import EdgeCompressError, mismatch
    from edgecompress.targets.profile import load_profile

    if latency is not None and latency not in SOURCES:
        raise EdgeCompressError(f"--latency must be one of {SOURCES}, got {latency!r}")
    runtime = experiment.target.runtime
    if runtime != "onnxruntime":  # tables are timed by ONNX Runtime's runner
        if target is not None or latency == "table" or screen:
            raise EdgeCompressError(
                f"the experiment's target runs {runtime}: latency tables are measured with "
                "ONNX Runtime, so its latency is measured live on this machine. Leave out "
                "--target, --latency table and --screen."
            )
        if experiment.target.name != "local-cpu":  # it would be measured here under its name
            raise EdgeCompressError(
                f"target {experiment.target.name!r} runs {runtime}, which is measured live on "
                "this machine only: name it 'local-cpu' (Target(name='local-cpu', runtime="
                f"{runtime!r})), or run the search on that device."
            )
        return None
    profile = load_profile(target or experiment.target.name, targets)
    local = measured_here(profile)
    source = latency or ("live" if local else "table")
    if source == "live" and not local:
        raise EdgeCompressError(
            f"target {profile.target.name!r} is another device (its table was measured on "
            f"{profile.require_table().header['device'].get('cpu_model')!r}): its latency can "
            "only come from its table. Use --latency table."
        )
    asked = latency == "table" or bool(screen) or not local
    if profile.table is None and not asked:
        return None
    table = profile.require_table()
    settings = {"threads": experiment.target.threads, "batch_size": experiment.target.batch_size}
    differ = {k: (table.header[k], v) for k, v in settings.items() if int(table.header[k]) != v}
    if differ and not asked:
        return None  # a live search on this machine; that table was built for other settings
    if not table.header.get("complete", True):
        raise EdgeCompressError(
            f"target {profile.target.name!r}'s table is incomplete (a build stopped by its time "
            "limit, or a device run that did not reach every kernel): run the same `table "
            "build` again, or the bundle's run.py on the device, then import it."
        )
    if differ:
        was, runs = mismatch(differ)
        raise EdgeCompressError(
            f"target {profile.target.name!r}'s table was measured with {was}; the experiment's "
            f"target runs {runs}. Build the table with the experiment's settings, or change "
            "Experiment.target."
        )
    return Costing(
        target=profile.target.name,
        folder=str(profile.folder.resolve()),
        latency=source,
        screen=screen if screen is not None else True,
    )


def measurable_here(result: Any) -> bool:
    """Whether a study's latencies can be measured on this machine: live ones, or a table's
    measured on this CPU."""
    data = result.meta.costing
    if not data or data["latency"] == "live":
        return True
    header = _table(data["folder"]).header
    return bool(header["device"].get("cpu_model") == describe_device()["cpu_model"])
