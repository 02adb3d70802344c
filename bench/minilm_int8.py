"""Static against dynamic int8 on the pretrained all-MiniLM-L6-v2 (issue 14), untrained.

Each plan is the search's int8 baseline (every Linear layer int8) with ``method.quant`` static
or dynamic, built by the pipeline's ``compress`` without fine-tuning, scored on the validation
sentences (cosine similarity of the embeddings to the teacher's) and timed by the search's own
latency probe (median ratio to the teacher in interleaved rounds).

    .venv/bin/python bench/minilm_int8.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgecompress.compress import compress
from edgecompress.evaluators.metrics import onnx_outputs
from edgecompress.examples.minilm import experiment
from edgecompress.plan import Plan
from edgecompress.search.engine import checked_reference, space_of
from edgecompress.search.probe import LatencyProbe
from edgecompress.spaces import baseline_params, replay


def main() -> None:
    reference = checked_reference(experiment)
    space = space_of(experiment, reference)
    probe = LatencyProbe(experiment, reference, 1.0)  # latencies as ratios to the teacher
    x, y = experiment.task.arrays("val")
    for method in ("static", "dynamic"):
        params = {**baseline_params(space, "int8"), "method.quant": method}
        plan = Plan({**replay(space, params).to_dict(), "finetune.epochs": 0})
        with tempfile.TemporaryDirectory() as tmp:
            candidate = compress(experiment, plan, Path(tmp))
            outputs = onnx_outputs(candidate.onnx_path, experiment.inputs.named(x))
        cosine = experiment.task.evaluate(outputs, y)["cosine"]
        print(f"int8 {method}: cosine {cosine:.4f}, {1 / probe(plan):.2f}x the teacher's speed")


if __name__ == "__main__":
    main()
