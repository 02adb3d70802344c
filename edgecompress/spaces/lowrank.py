"""Low-rank decomposition: per layer, the share of its multiply-adds a factorization keeps."""

from __future__ import annotations

from edgecompress.spaces.base import KnobSpace, Skipped, check_choices, per_layer
from edgecompress.spaces.pruning import choice
from edgecompress.spaces.stages import tie

DECOMPOSITIONS = ("tucker2", "spatial_svd")


def low_rank(
    layers: list[str],
    *,
    low: float = 0.1,
    step: float = 0.05,
    decompositions: tuple[str, ...] = DECOMPOSITIONS,
    stages: int | None = None,
    skipped: tuple[Skipped, ...] = (),
) -> KnobSpace:
    """``rank.<layer>`` in [low, 1]: 1 keeps the layer dense; below 1 the compressor factorizes
    it (truncated SVD for Linear and 1x1 convolutions; Tucker-2 or spatial SVD, chosen by
    ``method.decomposition``, for larger kernels) at the largest rank whose multiply-adds are
    at most that share of the dense layer's. Every value below 1 therefore saves multiply-adds.
    """
    check_choices("decompositions", decompositions, DECOMPOSITIONS)
    if not 0.0 < low < 1.0:
        raise ValueError(f"the smallest multiply-add share must lie in (0, 1), got {low}")
    shares = per_layer(
        "rank",
        {layer: (layer,) for layer in layers},
        low=low,
        high=1.0,
        step=step,
        identity=1.0,
        fastest=low,
    )
    knobs = tie(shares, stages, "rank")
    if knobs:
        knobs.append(choice("method.decomposition", decompositions, ordered=False))
    return KnobSpace(tuple(knobs), skipped)
