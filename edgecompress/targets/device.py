"""What machine a measurement ran on: CPU model, ISA flags, runtime versions."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from edgecompress.targets.runner import describe_here

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


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def int8_pairs_saturate(flags: list[str] | None = None) -> bool:
    """True on an x86 CPU without VNNI (``flags``: its ISA flags; default: this machine's).
    There ONNX Runtime's int8 kernels for uint8 activations and int8 weights add pairs of
    products in 16 bits (VPMADDUBSW), which saturate with weights over the full 8-bit range;
    weights in 7 bits (``reduce_range``) cannot. See ONNX Runtime's quantization notes."""
    flags = describe_device()["isa_flags"] if flags is None else flags
    x86 = "avx2" in flags or "sse4_2" in flags
    return x86 and not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags)


def describe_device() -> dict[str, Any]:
    """The device description stored with a study, a table or an exported model: the one a
    bundle's run.py records, with the ISA flags that change ONNX Runtime's kernels."""
    here = describe_here()
    return {**here, "isa_flags": [f for f in here["isa_flags"] if f in _ISA_FLAGS]}
