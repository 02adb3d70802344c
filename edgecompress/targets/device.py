"""What machine a measurement ran on: CPU model, ISA flags, runtime versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

from edgecompress.targets.runner import cpu_info

# ISA extensions that change which kernels ONNX Runtime picks; recorded with every measurement.
_ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "amx_int8",
    "amx_bf16",
    "neon",
    "asimd",
    "asimddp",
    "sve",
    "i8mm",
    "bf16",
)
_PACKAGES = ("edgecompress", "torch", "onnx", "onnxruntime", "optuna", "ray", "torch-pruning")


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = cpu_info()
    return model, sorted(f for f in flags if f in _ISA_FLAGS)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def describe_device() -> dict[str, Any]:
    """The device description stored with a study, a table or an exported model."""
    model, flags = _cpuinfo()
    return {
        "cpu_model": model,
        "isa_flags": flags,
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "system": platform.system(),
        "python": platform.python_version(),
        "onnxruntime": package_versions()["onnxruntime"],
    }
