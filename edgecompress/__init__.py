"""edgecompress: automated compression search for models that must run on edge devices.

Typical use::

    from edgecompress import load_experiment, search, export
    experiment = load_experiment("edgecompress.examples.mnist1d:experiment")
    result = search(experiment, trials=24, speedup=10)
    result.front()                        # the Pareto front, a pandas DataFrame
    export(experiment, result, "model.onnx")
"""

__version__ = "0.1.0"  # before the imports below: export.py records it in its manifests

from edgecompress.blocks import StudentFamily
from edgecompress.errors import EdgeCompressError, NoFeasibleTrial
from edgecompress.experiment import Experiment, load_experiment
from edgecompress.plan import InvalidPlan, Plan
from edgecompress.targets import Target
from edgecompress.tasks import (
    ClassificationTask,
    FinetuneSettings,
    Metric,
    RegressionTask,
    SupervisedTask,
)

# The verbs share their names with their modules; importing them here binds the package
# attributes to the functions, once and in this order.
from edgecompress.search import Result, open_result, search  # noqa: E402  isort: skip
from edgecompress.export import export  # noqa: E402  isort: skip


__all__ = [
    "ClassificationTask",
    "EdgeCompressError",
    "Experiment",
    "FinetuneSettings",
    "InvalidPlan",
    "Metric",
    "NoFeasibleTrial",
    "Plan",
    "RegressionTask",
    "Result",
    "StudentFamily",
    "SupervisedTask",
    "Target",
    "export",
    "load_experiment",
    "open_result",
    "search",
]
