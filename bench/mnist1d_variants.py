"""The MNIST-1D example with the search space narrowed to one technique, for bench/techniques.py.

Ray workers import this file by its path (``bench/mnist1d_variants.py:prune``).
"""

from dataclasses import replace
from pathlib import Path

from edgecompress import load_experiment
from edgecompress.spaces import TECHNIQUES, AutoSpace

base = load_experiment(f"{Path(__file__).parent.parent / 'examples' / 'mnist1d.py'}:experiment")

prune = replace(base, name="mnist1d-prune", space=AutoSpace(techniques=("prune",)))
rank = replace(base, name="mnist1d-rank", space=AutoSpace(techniques=("rank",)))
sparsity = replace(
    base,
    name="mnist1d-sparsity",
    space=AutoSpace(techniques=("sparsity",)),
    objectives=("accuracy", "latency_ms", "size_gz_mb"),
)
# every technique, sparsity included (the default AutoSpace() leaves sparsity out unless a size
# is an objective: here it rides along, as a user who asks for everything would have it)
everything = replace(base, name="mnist1d-all", space=AutoSpace(techniques=TECHNIQUES))
# students derived from the teacher, the distillation losses and per-layer precision
students = replace(
    base, name="mnist1d-students", space=AutoSpace(techniques=("student", "distill", "bits"))
)
