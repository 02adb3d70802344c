"""Per-layer precision, and how quantized layers are made.

``bits.<layer>`` is an ordinal knob over the widths the target runs for that layer: 4 (int4
weights; only Linear/MatMul layers, ONNX Runtime's MatMulNBits), 8 (int8), 16 (fp16), 32
(fp32), plus the widths the target only emulates (fake-quantized here). The sampler sees the
order of the widths, never a categorical index.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgecompress.plan import CALIBRATIONS, QUANT_METHODS, ROUNDINGS
from edgecompress.spaces.base import Knob, KnobSpace, check_choices

INT4, INT8, FP16, FP32 = 4, 8, 16, 32
DEPLOYED = {"int4": INT4, "int8": INT8, "fp16": FP16, "fp32": FP32}
CALIBRATION_SAMPLES = (64, 128, 256, 512)


def widths(*, linear: bool, precisions: Sequence[str], emulated: Sequence[int]) -> tuple[int, ...]:
    """The bit widths a layer can take on a target, increasing (fp32 always): int4 only on a
    Linear layer, the emulated widths on any."""
    deployed = {DEPLOYED[p] for p in precisions if p != "int4" or linear}
    return tuple(sorted(deployed | set(emulated) | {FP32}))


def precision(layers: dict[str, tuple[int, ...]], *, fastest: int = INT8) -> KnobSpace:
    """``bits.<layer>`` over each layer's widths; identity fp32, fastest ``fastest`` (int8:
    the width that is fast on most CPUs) where offered, else the narrowest width."""
    knobs = []
    for layer, choices in layers.items():
        if len(choices) < 2:
            continue
        quick = fastest if fastest in choices else min(c for c in choices if c != FP32)
        knobs.append(
            Knob(
                name=f"bits.{layer}",
                kind="ordinal",
                choices=choices,
                identity=FP32,
                fastest=quick,
                layers=(layer,),
            )
        )
    return KnobSpace(tuple(knobs))


def quantization_methods(
    *,
    methods: Sequence[str] = QUANT_METHODS,
    calibrations: Sequence[str] = CALIBRATIONS,
    samples: Sequence[int] = CALIBRATION_SAMPLES,
    roundings: Sequence[str] = ROUNDINGS,
) -> KnobSpace:
    """How int8 layers are made (``method.quant``), their calibration (method and samples) and
    the rounding of quantized weights. Identity: static, min/max, 256 samples (or the nearest
    offered), round to nearest."""
    check_choices("quantization methods", tuple(methods), QUANT_METHODS)
    check_choices("calibration methods", tuple(calibrations), CALIBRATIONS)
    check_choices("roundings", tuple(roundings), ROUNDINGS)
    counts = tuple(sorted(set(samples)))
    if not counts or counts[0] < 1:
        raise ValueError(f"calibration samples {list(samples)}: give positive sample counts")
    default = min(counts, key=lambda n: abs(n - 256))
    return KnobSpace(
        (
            _choice("method.quant", methods, "static"),
            _choice("method.calibration", calibrations, "minmax"),
            Knob(
                name="method.calibration_samples",
                kind="ordinal",
                choices=counts,
                identity=default,
            ),
            _choice("method.rounding", roundings, "nearest"),
        )
    )


def _choice(name: str, choices: Sequence[str], preferred: str) -> Knob:
    values = tuple(choices)
    identity = preferred if preferred in values else values[0]
    if len(values) == 1:
        return Knob(name=name, kind="fixed", value=values[0])
    return Knob(name=name, kind="choice", choices=values, identity=identity)
