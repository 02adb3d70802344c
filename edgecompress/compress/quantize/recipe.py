"""The quantization recipe of a plan: each layer's precision, and how it is reached.

Plan entries read here:

- ``bits.<layer>``: 32 (fp32), 16 (fp16), 8 (int8), 4 on a Linear/MatMul layer (int4 weights,
  ONNX Runtime's MatMulNBits), or 2-7 on any layer (and 4 on a convolution): *emulated*
  n-bit weights (fake-quantization in PyTorch; the ONNX model keeps fp32 kernels with weights
  on the n-bit grid). Emulated widths are for targets whose own runtime has such kernels; the
  accuracy is that of the fake-quantized model and the manifest says so;
- ``method.quant``: how int8 layers are made: ``static`` (post-training, activations calibrated,
  QDQ), ``dynamic`` (weights int8, activations quantized at run time; Linear/MatMul and Conv),
  ``qat`` (fine-tuning with fake-quantized weights and inputs, then static QDQ);
- ``method.calibration`` (``minmax``, ``entropy``, ``percentile``) and
  ``method.calibration_samples``: the activation ranges of static and QAT int8;
- ``method.rounding``: ``nearest`` or ``stochastic`` rounding of int8 and emulated weights.

Weights are per-channel and symmetric throughout; activations per-tensor uint8.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgecompress.plan import CALIBRATIONS, QUANT_METHODS, ROUNDINGS, InvalidPlan, Plan
from edgecompress.targets import Target

BITS = (2, 3, 4, 5, 6, 7, 8, 16, 32)
INT4_BLOCK = 32
DEFAULT_SAMPLES = 256


@dataclass(frozen=True, kw_only=True)
class QuantRecipe:
    """``precisions``: layer -> ``fp32`` / ``fp16`` / ``int8`` / ``int4`` / ``emulated<n>``."""

    precisions: dict[str, str] = field(default_factory=dict)
    method: str = "static"
    calibration: str = "minmax"
    calibration_samples: int = DEFAULT_SAMPLES
    rounding: str = "nearest"

    def layers(self, kind: str) -> list[str]:
        return [layer for layer, p in self.precisions.items() if p == kind]

    def emulated(self) -> dict[str, int]:
        """``{layer: bits}`` of the emulated (fake-quantized) layers."""
        return {
            layer: int(p.removeprefix("emulated"))
            for layer, p in self.precisions.items()
            if p.startswith("emulated")
        }

    def rounded(self) -> dict[str, int]:
        """``{layer: bits}`` whose weights are rounded in PyTorch before export: emulated
        layers, and int8 layers under stochastic rounding or QAT."""
        found = self.emulated()
        if self.rounding == "stochastic" or self.method == "qat":
            found.update({layer: 8 for layer in self.layers("int8")})
        return found

    def to_dict(self) -> dict[str, Any]:
        """For the trial's notes and the export manifest."""
        kinds = sorted(set(self.precisions.values()))
        d: dict[str, Any] = {
            "precisions": dict(self.precisions),
            "weights": "per-channel symmetric (int4: per block of 32, symmetric)",
            "rounding": self.rounding,
        }
        if "int8" in kinds:
            d["int8"] = {
                "static": "static QDQ (post-training)",
                "dynamic": "dynamic (activations quantized at run time)",
                "qat": "QDQ after quantization-aware training",
            }[self.method]
            if self.method != "dynamic":
                d["calibration"] = self.calibration
                d["calibration_samples"] = self.calibration_samples
                d["activations"] = "per-tensor uint8"
        if "int4" in kinds:
            d["int4"] = f"MatMulNBits, block {INT4_BLOCK}, symmetric, round to nearest"
        if any(k.startswith("emulated") for k in kinds):
            d["emulated"] = (
                "fake-quantized weights in fp32 kernels: the accuracy is that of the "
                "fake-quantized model; the latency measured here is of fp32 kernels, not of "
                "the target's n-bit kernels"
            )
        return d


def recipe(plan: Plan, linear: set[str], *, int4: bool = True) -> QuantRecipe:
    """The plan's recipe; ``linear``: the layers that run as Linear/MatMul; ``int4``: whether
    the target runs int4 MatMul (else 4 bits on a Linear is emulated, like on a convolution)."""
    runs_int4 = linear if int4 else set()
    return QuantRecipe(
        precisions={layer: _precision(layer, b, runs_int4) for layer, b in _bits(plan).items()},
        method=_choice(plan, "method.quant", QUANT_METHODS, "static"),
        calibration=_choice(plan, "method.calibration", CALIBRATIONS, "minmax"),
        calibration_samples=_samples(plan),
        rounding=_choice(plan, "method.rounding", ROUNDINGS, "nearest"),
    )


def check_target(quant: QuantRecipe, target: Target) -> None:
    """A precision the target cannot run is an ``InvalidPlan`` naming what it can run."""
    runs = set(target.precisions)
    emulates = set(target.emulated_bits)
    bad = {
        layer: p
        for layer, p in quant.precisions.items()
        if (
            int(p.removeprefix("emulated")) not in emulates
            if p.startswith("emulated")
            else p not in runs
        )
    }
    if bad:
        raise InvalidPlan(
            f"bits: target {target.name!r} cannot run {bad}: it runs {sorted(runs)}"
            + (f" and emulates {sorted(emulates)}-bit weights" if emulates else "")
            + "; list more in Target(precisions=..., emulated_bits=...) if the device has them"
        )


def _bits(plan: Plan) -> dict[str, int]:
    bits = plan.section("bits")
    bad = {k: v for k, v in bits.items() if isinstance(v, bool) or v not in BITS}
    if bad:
        raise InvalidPlan(f"bits: each value must be one of {BITS}, got {bad}")
    return {k: int(v) for k, v in bits.items()}


def _precision(layer: str, bits: int, linear: set[str]) -> str:
    if bits in (8, 16, 32):
        return {8: "int8", 16: "fp16", 32: "fp32"}[bits]
    if bits == 4 and layer in linear:
        return "int4"
    return f"emulated{bits}"


def _choice(plan: Plan, key: str, allowed: tuple[str, ...], default: str) -> str:
    value = plan.get(key, default)
    if value not in allowed:
        raise InvalidPlan(f"{key} {value!r}: choose one of {allowed}")
    return str(value)


def _samples(plan: Plan) -> int:
    value = plan.get("method.calibration_samples", DEFAULT_SAMPLES)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidPlan(f"method.calibration_samples must be an integer >= 1, got {value!r}")
    return value
