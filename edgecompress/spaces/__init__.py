"""What may vary: pruning, sparsity, low-rank, precision, fine-tuning; sampled into a Plan."""

from __future__ import annotations

from edgecompress.spaces.auto import TECHNIQUES, AutoSpace
from edgecompress.spaces.base import Knob, KnobSpace, Skipped, Space, describe
from edgecompress.spaces.distill import distillation_knobs
from edgecompress.spaces.joint import Joint
from edgecompress.spaces.layers import ChannelGroup, channel_groups, output_layer, weight_layers
from edgecompress.spaces.levels import baseline_params, on_grid, replay
from edgecompress.spaces.lowrank import DECOMPOSITIONS, low_rank
from edgecompress.spaces.precision import FP16, FP32, INT4, INT8, precision, quantization_methods
from edgecompress.spaces.pruning import CRITERIA, ROUND_TO, channel_pruning
from edgecompress.spaces.sparsity import MODES, unstructured
from edgecompress.spaces.student import derived_student_space, family_space

__all__ = [
    "CRITERIA",
    "DECOMPOSITIONS",
    "FP16",
    "FP32",
    "INT4",
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
    "derived_student_space",
    "describe",
    "distillation_knobs",
    "family_space",
    "low_rank",
    "output_layer",
    "precision",
    "quantization_methods",
    "unstructured",
    "weight_layers",
    "baseline_params",
    "on_grid",
    "replay",
]
