"""Conformance checks anyone can run on their own compressor or space (like scikit-learn's
``check_estimator``): each raises ``AssertionError`` naming the broken rule.

    from edgecompress.testing import check_compressor
    check_compressor(MyPruner(), model, example_input, plan, invalid_plan=bad_plan)
"""

from edgecompress.testing.conformance import (
    Compressor,
    OnnxCompressor,
    check_compressor,
    check_onnx_compressor,
    check_onnx_parity,
    check_space,
)

__all__ = [
    "Compressor",
    "OnnxCompressor",
    "check_compressor",
    "check_onnx_compressor",
    "check_onnx_parity",
    "check_space",
]
