"""Quantization: per-layer precision in ONNX Runtime, and weight quantization in PyTorch."""

from edgecompress.compress.quantize.calibration import CalibrationError, calibration_batches
from edgecompress.compress.quantize.fake import (
    fake_quant_training,
    linear_layers,
    quantize_weight,
    round_weights,
)
from edgecompress.compress.quantize.graph import int8_layers, layer_precisions
from edgecompress.compress.quantize.onnx_quantizer import OnnxQuantizer
from edgecompress.compress.quantize.recipe import QuantRecipe, check_target, recipe

__all__ = [
    "CalibrationError",
    "OnnxQuantizer",
    "QuantRecipe",
    "calibration_batches",
    "check_target",
    "fake_quant_training",
    "int8_layers",
    "layer_precisions",
    "linear_layers",
    "quantize_weight",
    "recipe",
    "round_weights",
]
