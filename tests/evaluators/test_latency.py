"""Latency is a ratio to a reference timed in the same rounds; no wall-clock time is asserted."""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgecompress.compress import export_onnx
from edgecompress.evaluators import measure_ratio


def _mlp(width: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    ).eval()


def test_ratio_orders_models_and_is_one_against_itself(tmp_path: Path) -> None:
    x = torch.zeros(1, 64)
    small = export_onnx(_mlp(16), x, tmp_path / "small.onnx")
    big = export_onnx(_mlp(1024), x, tmp_path / "big.onnx")
    feed = np.zeros((1, 64), np.float32)
    same = measure_ratio(big, big, feed, threads=1, rounds=31)
    faster = measure_ratio(small, big, feed, threads=1, rounds=15)
    # the same model against itself: ~1 (generous bounds; this is about the method, not speed)
    assert 0.6 < same.ratio < 1.6
    # ~1000x fewer multiply-adds: far below 1 whatever the machine's speed
    assert faster.ratio < 0.5
    assert faster.rounds == 15 and faster.spread_pct >= 0
