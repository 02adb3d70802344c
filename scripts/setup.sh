#!/usr/bin/env bash
# Creates .venv and installs edgecompress with its test tools. Idempotent: a second run installs nothing new.
# torch is installed first and pinned: the CPU build of 2.13.0 lies on this kind of machine's disk, and an
# unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.edgecompress-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  touch "$stamp"
fi
