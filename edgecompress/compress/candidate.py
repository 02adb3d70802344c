"""Candidate: what a plan produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from edgecompress.plan import Plan


@dataclass(frozen=True)
class Candidate:
    """A compressed model: the plan, the PyTorch module before export, the deployable ONNX file.

    ``notes`` records what was applied, for the manifest.
    """

    plan: Plan
    module: nn.Module
    onnx_path: Path
    notes: dict[str, object] = field(default_factory=dict)
