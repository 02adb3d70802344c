"""How to apply a Plan: one small module per technique, composed by ``compress``."""

from __future__ import annotations

from edgecompress.compress.candidate import Candidate
from edgecompress.compress.lowrank import LowRankFactorizer
from edgecompress.compress.onnx_export import export_onnx, layer_nodes
from edgecompress.compress.pipeline import compress, finetune_settings
from edgecompress.compress.prune import ChannelPruner
from edgecompress.compress.quantize import OnnxQuantizer, int8_layers, layer_precisions
from edgecompress.compress.sparsity import UnstructuredPruner, finalize, onnx_weight_sparsity

__all__ = [
    "Candidate",
    "ChannelPruner",
    "LowRankFactorizer",
    "OnnxQuantizer",
    "UnstructuredPruner",
    "compress",
    "export_onnx",
    "finalize",
    "finetune_settings",
    "int8_layers",
    "layer_precisions",
    "layer_nodes",
    "onnx_weight_sparsity",
]
