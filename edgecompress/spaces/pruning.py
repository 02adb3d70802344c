"""Structured (channel) pruning: one ratio per coupled channel group."""

from __future__ import annotations

from edgecompress.spaces.base import Knob, KnobSpace
from edgecompress.spaces.layers import ChannelGroup


def channel_pruning(
    groups: list[ChannelGroup], *, low: float = 0.0, high: float = 0.9, step: float = 0.05
) -> KnobSpace:
    """``prune.<group>``: the fraction of the group's output channels removed."""
    if not 0.0 <= low <= high < 1.0:
        raise ValueError(f"pruning ratios need 0 <= low <= high < 1, got low={low}, high={high}")
    knobs = tuple(
        Knob(
            name=f"prune.{g.name}",
            kind="float",
            low=low,
            high=high,
            step=step,
            identity=0.0,
            layers=g.layers,
        )
        for g in groups
    )
    return KnobSpace(knobs)
