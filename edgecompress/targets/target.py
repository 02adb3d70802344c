"""Target: the device a compressed model must run on, and how it is run there."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

PRECISIONS = ("fp32", "fp16", "int8", "int4")
# the runtimes a target is measured with here, each with its device and the precisions it runs:
# OpenVINO 2026 reads the same ONNX files, QDQ int8, dynamic int8 and ONNX Runtime's int4
# MatMulNBits operator included (outputs within rounding of ONNX Runtime's)
RUNTIMES = {
    "onnxruntime": ("CPUExecutionProvider", PRECISIONS),
    "openvino": ("CPU", PRECISIONS),
}


@dataclass(frozen=True, kw_only=True)
class Target:
    """A device profile. ``local-cpu`` measures live on this machine with ONNX Runtime.

    ``runtime`` is what runs the deployed ONNX file, for its latency and its metrics:
    ``"onnxruntime"`` (``execution_provider`` ``"CPUExecutionProvider"``) or ``"openvino"``
    (Intel's OpenVINO, ``pip install 'edgecompress[openvino]'``; ``execution_provider`` is its
    device, ``"CPU"``, the default there). Other providers and runtimes (TensorRT, QNN, Core
    ML, XNNPACK) are not measured here: their latency would come from a table measured on the
    device.

    ``threads`` is the intra-op thread count fixed for every measurement, ``batch_size`` the
    batch of one inference call. ``precisions`` are the layer formats its runtime runs (ONNX
    Runtime on a CPU: fp32, fp16, int8, and int4 weights for MatMul); ``emulated_bits`` are
    weight widths (2-7, or 4 for convolutions) its own kernels run but ONNX Runtime here does
    not: the search fake-quantizes them, and their latency must come from the target's table.
    """

    name: str = "local-cpu"
    runtime: str = "onnxruntime"
    execution_provider: str = "CPUExecutionProvider"
    threads: int = 1
    batch_size: int = 1
    precisions: tuple[str, ...] = PRECISIONS
    emulated_bits: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"Target.threads must be >= 1, got {self.threads}")
        if self.batch_size < 1:
            raise ValueError(f"Target.batch_size must be >= 1, got {self.batch_size}")
        if self.runtime not in RUNTIMES:
            raise ValueError(
                f"Target.runtime {self.runtime!r}: choose among {sorted(RUNTIMES)} (another "
                "runtime's latency comes from a table measured on its device)"
            )
        provider, runs = RUNTIMES[self.runtime]
        if self.runtime != "onnxruntime" and self.execution_provider == "CPUExecutionProvider":
            # the dataclass default is ONNX Runtime's device: another runtime gets its own
            object.__setattr__(self, "execution_provider", provider)
        if self.execution_provider != provider:
            raise ValueError(
                f"Target.execution_provider {self.execution_provider!r}: with runtime "
                f"{self.runtime!r} only {provider!r} is measured so far"
            )
        unknown = [p for p in self.precisions if p not in runs]
        if unknown or "fp32" not in self.precisions:
            raise ValueError(
                f"Target.precisions {self.precisions!r}: {self.runtime} runs {runs}; choose "
                "among them, fp32 included"
            )
        bad = [b for b in self.emulated_bits if b not in range(2, 8)]
        if bad:
            raise ValueError(f"Target.emulated_bits {bad}: emulated widths lie in 2..7")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Target:
        """The inverse of ``to_dict``."""
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists, as a study stores them)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
