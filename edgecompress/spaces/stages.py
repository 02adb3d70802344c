"""Per-stage knobs: one knob for a run of consecutive layers, a coarser space for deep models."""

from __future__ import annotations

from dataclasses import replace

from edgecompress.spaces.base import Knob


def split(items: list[str], stages: int) -> list[list[str]]:
    """``items`` (in model order) into ``stages`` contiguous runs of nearly equal length."""
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}")
    stages = min(stages, len(items))
    bounds = [round(i * len(items) / stages) for i in range(stages + 1)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def tie(knobs: list[Knob], stages: int | None, section: str) -> list[Knob]:
    """One knob per stage, writing its value to every plan entry of the stage's knobs.

    ``stages=None`` keeps one knob per layer (or group). The knobs must share their range.
    """
    if stages is None or not knobs:
        return knobs
    tied = []
    for i, run in enumerate(split([k.name for k in knobs], stages)):
        members = [k for k in knobs if k.name in run]
        tied.append(
            replace(
                members[0],
                name=f"{section}:stage{i}",
                layers=tuple(layer for k in members for layer in k.layers),
                targets=tuple(key for k in members for key in k.plan_keys()),
            )
        )
    return tied
