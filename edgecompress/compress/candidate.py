"""Candidate: what a plan produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from edgecompress.plan import Plan

# What a compressor reports it did (JSON-ready; the pipeline keeps it in the trial's notes):
# ``apply(model, plan) -> (model, report)``, or for a compressor of ONNX files
# ``apply(src, dst, plan) -> report``. Empty: nothing worth noting.
Report = dict[str, Any]


@dataclass(frozen=True)
class Candidate:
    """A compressed model: the plan, the PyTorch module before export, the deployable ONNX file.

    ``notes`` records what was applied, for the manifest.
    """

    plan: Plan
    module: nn.Module
    onnx_path: Path
    notes: dict[str, object] = field(default_factory=dict)
