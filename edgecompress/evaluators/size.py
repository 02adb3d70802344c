"""Size of the deployable file: on disk, and gzip-compressed (where weight sparsity shows)."""

from __future__ import annotations

from edgecompress.compress import Candidate
from edgecompress.evaluators.compressed_size import gzip_size_mb


def file_size(candidate: Candidate) -> dict[str, float]:
    """``size_mb`` (the file) and ``size_gz_mb``: dense runtimes gain no speed from zeroed
    weights, but a model shipped compressed shrinks with them."""
    path = candidate.onnx_path
    return {"size_mb": path.stat().st_size / 1e6, "size_gz_mb": gzip_size_mb(path)}
