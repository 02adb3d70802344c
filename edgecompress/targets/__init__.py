"""Target devices: runtime settings and the description recorded with every measurement."""

from edgecompress.targets.device import describe_device
from edgecompress.targets.table import LatencyTable, Layer, Prediction, TableError, load_table
from edgecompress.targets.target import Target

__all__ = [
    "LatencyTable",
    "Layer",
    "Prediction",
    "TableError",
    "Target",
    "describe_device",
    "load_table",
]
