"""Per-layer precision: int8 (static QDQ in ONNX Runtime) or fp32."""

from __future__ import annotations

from edgecompress.spaces.base import Knob, KnobSpace

INT8, FP32 = 8, 32


def precision(layers: list[str]) -> KnobSpace:
    """``bits.<layer>`` in {8, 32}: an ordered int knob (step 24), never a categorical index."""
    knobs = tuple(
        Knob(
            name=f"bits.{layer}",
            kind="int",
            low=INT8,
            high=FP32,
            step=FP32 - INT8,
            identity=FP32,
            layers=(layer,),
        )
        for layer in layers
    )
    return KnobSpace(knobs)
