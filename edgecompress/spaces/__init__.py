"""What may vary: pruning, sparsity, low-rank, precision, fine-tuning; sampled into a Plan."""

from __future__ import annotations

from edgecompress.spaces.auto import TECHNIQUES, AutoSpace
from edgecompress.spaces.base import Knob, KnobSpace, Skipped, Space, describe
from edgecompress.spaces.joint import Joint
from edgecompress.spaces.layers import ChannelGroup, channel_groups, output_layer, weight_layers
from edgecompress.spaces.lowrank import DECOMPOSITIONS, low_rank
from edgecompress.spaces.precision import FP32, INT8, precision
from edgecompress.spaces.pruning import CRITERIA, ROUND_TO, channel_pruning
from edgecompress.spaces.sparsity import MODES, unstructured

__all__ = [
    "CRITERIA",
    "DECOMPOSITIONS",
    "FP32",
    "INT8",
    "MODES",
    "ROUND_TO",
    "TECHNIQUES",
    "AutoSpace",
    "ChannelGroup",
    "Joint",
    "Knob",
    "KnobSpace",
    "Skipped",
    "Space",
    "channel_groups",
    "channel_pruning",
    "describe",
    "low_rank",
    "output_layer",
    "precision",
    "unstructured",
    "weight_layers",
]
