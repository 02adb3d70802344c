"""Unstructured (weight) sparsity: per-layer ratios, the way zeros are chosen, L1 strength."""

from __future__ import annotations

from edgecompress.spaces.base import Knob, KnobSpace, Skipped, check_choices, per_layer
from edgecompress.spaces.pruning import choice
from edgecompress.spaces.stages import tie

MODES = ("magnitude", "threshold", "global", "random", "l1")


def unstructured(
    layers: list[str],
    *,
    modes: tuple[str, ...] = MODES,
    high: float = 0.95,
    step: float = 0.05,
    stages: int | None = None,
    skipped: tuple[Skipped, ...] = (),
) -> KnobSpace:
    """``sparsity.<layer>``: the share of the layer's weights set to zero.

    ``method.sparsity`` chooses how: ``magnitude`` (smallest |w| per layer), ``threshold``
    (|w| under ``method.sparsity_threshold`` times the layer's weight std, on the layers whose
    ratio is above 0), ``global`` (smallest |w| over all those layers together, the share
    ``method.global_sparsity``), ``random`` (the baseline), ``l1`` (magnitude after fine-tuning
    with an L1 penalty of strength ``method.l1_strength``).
    """
    check_choices("sparsity modes", modes, MODES)
    if not 0.0 < high < 1.0:
        raise ValueError(f"the largest sparsity must lie in (0, 1), got {high}")
    ratios = per_layer(
        "sparsity",
        {layer: (layer,) for layer in layers},
        low=0.0,
        high=high,
        step=step,
        identity=0.0,
    )
    knobs = tie(ratios, stages, "sparsity")
    if not knobs:
        return KnobSpace((), skipped)
    knobs.append(choice("method.sparsity", modes, ordered=False))
    if "threshold" in modes:
        knobs.append(setting("method.sparsity_threshold", 0.05, 2.0, 0.05))
    if "global" in modes:
        knobs.append(setting("method.global_sparsity", 0.0, high, step))
    if "l1" in modes:
        knobs.append(l1_strength())
    return KnobSpace(tuple(knobs), skipped)


def setting(name: str, low: float, high: float, step: float) -> Knob:
    """A float setting of a technique; its identity (``low``) matters only with the technique."""
    return Knob(name=name, kind="float", low=low, high=high, step=step, identity=low)


def l1_strength() -> Knob:
    """``method.l1_strength``: the weight of every L1 penalty of the plan (a sum of |w| or of
    batch norm |gamma|), on a log scale."""
    return Knob(
        name="method.l1_strength", kind="float", low=1e-6, high=1e-3, log=True, identity=1e-6
    )
