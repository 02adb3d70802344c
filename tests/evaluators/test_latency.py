"""Latency is a ratio to a reference timed in the same rounds; no wall-clock time is asserted."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgecompress.compress import export_onnx
from edgecompress.errors import EdgeCompressError
from edgecompress.evaluators import measure_ratio
from edgecompress.evaluators.latency import EFFORT_ENV, LEAST_ROUNDS, scaled


def _mlp(width: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    ).eval()


def test_ratio_orders_models_and_is_one_against_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EFFORT_ENV, "1")  # the full measurement (the suite's default is less)
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


def test_the_measurement_effort_scales_rounds_and_refuses_nonsense(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EFFORT_ENV, "0.5")
    assert scaled(30, 0.3) == (15, 0.15)
    assert scaled(10, 0.3)[0] == LEAST_ROUNDS  # never a median of a handful
    x = torch.zeros(1, 64)
    model = export_onnx(_mlp(16), x, tmp_path / "m.onnx")
    feed = np.zeros((1, 64), np.float32)
    assert measure_ratio(model, model, feed, threads=1, rounds=30).rounds == 15
    monkeypatch.delenv(EFFORT_ENV)
    assert scaled(30, 0.3) == (30, 0.3)  # unset: the full measurement
    for bad in ("0", "1.5", "-1", "nan", "fast"):
        monkeypatch.setenv(EFFORT_ENV, bad)
        with pytest.raises(EdgeCompressError, match=EFFORT_ENV):
            scaled(30, 0.3)
