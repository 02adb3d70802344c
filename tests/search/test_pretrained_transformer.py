"""A Hugging Face transformer as users bring it (issue 14): a BERT sentence encoder with token
ids and an attention mask is searched (its heads pruned whole), scored by the cosine similarity
of its embeddings to the teacher's, and exported with a file that scores what was recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest

from edgecompress import export, load_experiment, open_result, search
from edgecompress.evaluators import session
from edgecompress.tasks.metrics import COSINE

pytest.importorskip("transformers")

BERT = f"{Path(__file__).parent.parent / 'bert_experiment.py'}:experiment"


def test_a_bert_encoder_is_searched_with_heads_pruned_and_exported(workdir: Path) -> None:
    experiment = load_experiment(BERT)
    result = search(
        experiment, trials=3, speedup=1.1, storage="sqlite:///b.db", progress=False, strategy="tpe"
    )
    trials = result.trials.set_index("trial")
    assert len(trials) == 3 and result.metric == "cosine"
    assert trials.loc[trials["baseline"] == "teacher", "cosine"].iloc[0] == pytest.approx(1.0)
    study = optuna.load_study(study_name="bert", storage="sqlite:///b.db")
    pruned = [
        t
        for t in study.get_trials()
        if t.state.name == "COMPLETE"
        and any(k.startswith("prune.") and v > 0 for k, v in t.params.items())
    ]
    assert pruned, "no trial pruned the encoder"  # the uniform seed does
    trial = pruned[0]
    assert 0.0 < trial.values[0] < 1.0
    out = workdir / "out" / "bert.onnx"
    export(experiment, open_result("bert", "sqlite:///b.db"), out, trial=trial.number)
    graph = onnx.load(out).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["inputs"] == ["input_ids", "attention_mask"]
    x, y = experiment.task.arrays("val")
    embeddings = session(out).run(None, experiment.inputs.named(x))[0]
    assert embeddings.shape == y.shape  # the hidden width, the output, is never pruned
    value, _ = COSINE.score(embeddings, y)
    assert value == pytest.approx(trials.loc[trial.number, "cosine"], abs=1e-6)
    assert np.isfinite(embeddings).all()
