"""Estimating an entry a table did not measure, from the rows of the same kind.

Latency of one kernel kind is close to linear, near any point, in its input width, output
width and work (multiply-adds): a fixed cost, input-proportional work (im2col, quantizing the
input), output-proportional work (writing, requantizing) and the arithmetic. So an unmeasured
configuration is estimated by a least-squares fit of ``c0 + c1*in + c2*out + c3*work`` over its
nearest measured neighbours (in log widths), weighted for relative error, with the slopes held
non-negative (more channels never cost less time), and then kept within the measured rows it
lies between (no more than a row that dominates it in every width, no less than one it
dominates). With few rows of the kind, it interpolates linearly in work instead.
Leave-one-out on this machine's table: median error 3-4% on fp32 and int4 convolutions and
matrix products, 5-9% on int8 ones (``bench/latency_table.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEIGHBOURS = 8
MIN_ROWS_TO_FIT = 6


@dataclass(frozen=True)
class Rows:
    """The measured rows of one kind: widths, work, latency and its standard deviation."""

    inputs: np.ndarray
    outputs: np.ndarray
    work: np.ndarray
    ms: np.ndarray
    sd: np.ndarray

    def estimate(self, inputs: int, outputs: int, work: float) -> tuple[float, float, bool]:
        """(latency, its standard deviation, whether it was measured exactly)."""
        same = (self.inputs == inputs) & (self.outputs == outputs) & (self.work == work)
        if same.any():
            return float(np.median(self.ms[same])), float(np.max(self.sd[same])), True
        if len(self.ms) < MIN_ROWS_TO_FIT:
            value, nearest = self._along_work(work)
        else:
            value, nearest = self._local_fit(inputs, outputs, work)
        value = self._bounded(value, inputs, outputs, work)
        distance = abs(work - self.work[nearest]) / max(self.work[nearest], 1.0)
        return value, float(self.sd[nearest] + value * min(distance, 1.0) * 0.1), False

    def _along_work(self, work: float) -> tuple[float, int]:
        order = np.argsort(self.work, kind="stable")
        xs, ys = self.work[order], np.maximum.accumulate(self.ms[order])
        nearest = int(order[np.argmin(np.abs(xs - work))])
        if work > xs[-1]:  # beyond the widest measured: in proportion to work
            return float(ys[-1] * work / max(xs[-1], 1e-12)), nearest
        return float(np.interp(work, xs, ys)), nearest

    def _local_fit(self, inputs: int, outputs: int, work: float) -> tuple[float, int]:
        distance = np.hypot(
            np.log(np.maximum(self.inputs, 1) / max(inputs, 1)),
            np.log(np.maximum(self.outputs, 1) / max(outputs, 1)),
        )
        near = np.argsort(distance, kind="stable")[:NEIGHBOURS]
        x = np.stack(
            [np.ones(len(near)), self.inputs[near], self.outputs[near], self.work[near]], axis=1
        ).astype(float)
        y = self.ms[near]
        coef = _nonnegative_slopes(x, y, 1 / np.maximum(y, 1e-6))
        value = float(np.array([1.0, inputs, outputs, work]) @ coef)
        return max(value, 0.0), int(near[0])

    def _bounded(self, value: float, inputs: int, outputs: int, work: float) -> float:
        below = (self.inputs <= inputs) & (self.outputs <= outputs) & (self.work <= work)
        above = (self.inputs >= inputs) & (self.outputs >= outputs) & (self.work >= work)
        low = float(self.ms[below].max()) if below.any() else 0.0
        high = float(self.ms[above].min()) if above.any() else float("inf")
        return min(max(value, low), high) if low <= high else value


def _nonnegative_slopes(x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Weighted least squares; a slope (not the intercept) that comes out negative is dropped
    and the rest refitted."""
    columns = list(range(x.shape[1]))
    coef = np.zeros(x.shape[1])
    while True:
        fit, *_ = np.linalg.lstsq(x[:, columns] * weight[:, None], y * weight, rcond=None)
        negative = [(v, c) for v, c in zip(fit, columns, strict=True) if c > 0 and v < 0]
        if not negative:
            coef[columns] = fit
            return coef
        columns.remove(min(negative)[1])
