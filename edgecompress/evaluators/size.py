"""Size of the deployable file."""

from __future__ import annotations

from edgecompress.compress import Candidate


def file_size(candidate: Candidate) -> dict[str, float]:
    return {"size_mb": candidate.onnx_path.stat().st_size / 1e6}
