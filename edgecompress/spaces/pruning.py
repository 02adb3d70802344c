"""Structured (channel) pruning: one ratio per coupled channel group, criterion and alignment."""

from __future__ import annotations

from edgecompress.plan import Value
from edgecompress.spaces.base import Knob, KnobSpace, Skipped, check_choices, per_layer
from edgecompress.spaces.layers import ChannelGroup
from edgecompress.spaces.stages import tie

CRITERIA = ("l1", "l2", "taylor", "bn_scale", "slimming", "fpgm", "random")
ROUND_TO = (1, 4, 8, 16)


def channel_pruning(
    groups: list[ChannelGroup],
    *,
    low: float = 0.0,
    high: float = 0.95,
    step: float = 0.05,
    criteria: tuple[str, ...] = ("l1",),
    round_to: tuple[int, ...] = (1,),
    stages: int | None = None,
    skipped: tuple[Skipped, ...] = (),
) -> KnobSpace:
    """``prune.<group>``: the fraction of the group's output channels removed.

    ``method.prune_criterion`` (a choice among ``criteria``) ranks the channels;
    ``method.round_to`` (ordered, among ``round_to``) aligns the widths kept. A single value is
    a fixed entry, not a knob. ``stages`` ties consecutive groups to one knob per stage.
    """
    if not 0.0 <= low <= high < 1.0:
        raise ValueError(f"pruning ratios need 0 <= low <= high < 1, got low={low}, high={high}")
    check_choices("pruning criteria", criteria, CRITERIA)
    if not round_to or any(not isinstance(r, int) or r < 1 for r in round_to):
        raise ValueError(f"round_to must be positive integers, got {round_to}")
    ratios = per_layer(
        "prune",
        {g.name: g.layers for g in groups},
        low=low,
        high=high,
        step=step,
        identity=0.0,
        fastest=high,
    )
    knobs = tie(ratios, stages, "prune")
    if knobs:
        knobs.append(choice("method.prune_criterion", criteria, ordered=False))
        knobs.append(choice("method.round_to", tuple(sorted(round_to)), ordered=True))
    return KnobSpace(tuple(knobs), skipped)


def choice(name: str, values: tuple[Value, ...], *, ordered: bool) -> Knob:
    """A knob over ``values`` (fixed when there is one); its first value is the identity."""
    if len(values) == 1:
        return Knob(name=name, kind="fixed", value=values[0])
    kind = "ordinal" if ordered else "choice"
    return Knob(name=name, kind=kind, choices=tuple(values), identity=values[0])
