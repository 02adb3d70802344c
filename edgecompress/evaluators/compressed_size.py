"""Compressed size of the deployable file: the ``size_gz_mb`` metric.

Dense runtimes gain no speed from zero weights; unstructured sparsity shows as a file that
compresses better (for download or flash storage).
"""

from __future__ import annotations

import gzip
from pathlib import Path


def gzip_size_mb(path: Path) -> float:
    """Size in MB (1e6 bytes) of the file's bytes gzip-compressed at level 9."""
    return len(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0)) / 1e6
