"""Target: the device a compressed model must run on, and how it is run there."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Target:
    """A device profile. ``local-cpu`` measures live on this machine with ONNX Runtime.

    ``threads`` is the intra-op thread count fixed for every measurement, ``batch_size`` the
    batch of one inference call.
    """

    name: str = "local-cpu"
    runtime: str = "onnxruntime"
    execution_provider: str = "CPUExecutionProvider"
    threads: int = 1
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"Target.threads must be >= 1, got {self.threads}")
        if self.batch_size < 1:
            raise ValueError(f"Target.batch_size must be >= 1, got {self.batch_size}")
        if self.runtime != "onnxruntime":
            raise ValueError(f"Target.runtime {self.runtime!r}: only 'onnxruntime' is supported")
        if self.execution_provider != "CPUExecutionProvider":
            raise ValueError(
                f"Target.execution_provider {self.execution_provider!r}: only "
                "'CPUExecutionProvider' is measured so far"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
