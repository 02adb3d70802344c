"""Target devices: runtime settings and the description recorded with every measurement."""

from edgecompress.targets.device import describe_device
from edgecompress.targets.target import Target

__all__ = ["Target", "describe_device"]
