"""Dynamic sequence length: the deployed model takes any size along the dimensions the
experiment names, in every precision; what cannot vary is refused before any work."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgecompress import EdgeCompressError, load_experiment, search
from edgecompress.evaluators import session
from tests.conftest import TINY

TOKENS = f"{Path(__file__).parent.parent / 'token_experiment.py'}:experiment"


def test_a_token_model_with_a_dynamic_sequence_compresses_to_models_of_any_length(
    tmp_path: Path,
) -> None:
    """The trial pipeline (compress: fine-tune, export, quantize) keeps the axis in every
    precision; the manifest's shapes name it (the search and export around it are the same
    for every model, and tested in test_token_inputs)."""
    from edgecompress.compress import compress
    from edgecompress.export import _graph_names
    from edgecompress.search.engine import checked_reference, space_of
    from edgecompress.spaces import baseline_params, replay

    experiment = replace(load_experiment(TOKENS), dynamic_axes={"input": {1: "sequence"}})
    reference = checked_reference(experiment)  # validated; the export runs at 6 and 24 tokens
    assert experiment.inputs.axes_of("input") == {0: "batch", 1: "sequence"}
    assert experiment.inputs.output_axes == ()  # (batch, classes): nothing follows the sequence
    space = space_of(experiment, reference)
    teacher = experiment.model()
    rng = np.random.default_rng(0)
    for kind in ("teacher", "int8"):
        plan = replay(space, baseline_params(space, kind))
        path = compress(experiment, plan, tmp_path / kind).onnx_path
        graph = onnx.load(path).graph
        assert kind == "teacher" or any(n.op_type.startswith("Quantize") for n in graph.node)
        shapes = _graph_names(Path(path))["shapes"]
        assert shapes["input"] == ["batch", "sequence"] and shapes["logits"] == ["batch", 3]
        sess = session(path)
        for length in (5, 12, 30):  # shorter and longer than the example's 12
            ids = rng.integers(0, 50, (4, length)).astype(np.int64)
            logits = sess.run(None, {"input": ids})[0]
            assert logits.shape == (4, 3) and np.isfinite(logits).all()
            if kind == "teacher":  # the fp32 export computes what the model does
                with torch.no_grad():
                    expected = teacher(torch.from_numpy(ids)).numpy()
                np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


def test_the_output_dimensions_that_follow_the_sequence_are_dynamic_too(tmp_path: Path) -> None:
    from edgecompress.compress import export_onnx
    from edgecompress.inputs import InputSpec

    per_token = torch.nn.Sequential(torch.nn.Embedding(20, 8), torch.nn.Linear(8, 5)).eval()
    ids = torch.zeros(1, 10, dtype=torch.int64)
    spec = InputSpec.of(per_token, ids, {"input": {1: "tokens"}})
    assert spec.output_axes == ((1, "tokens"),)  # (batch, tokens, 5)
    path = export_onnx(per_token, ids, tmp_path / "m.onnx", spec)
    out = session(path).run(None, {"input": np.ones((2, 17), np.int64)})[0]
    assert out.shape == (2, 17, 5)
    # a strided layer: the output's length follows the input's without equalling it
    strided = _Strided().eval()
    spec = InputSpec.of(strided, ids, {"input": {1: "tokens"}})
    assert spec.output_axes == ((2, "tokens_out2"),)  # (batch, 8, ceil(tokens / 2))
    path = export_onnx(strided, ids, tmp_path / "s.onnx", spec)
    out = session(path).run(None, {"input": np.ones((2, 17), np.int64)})[0]
    assert out.shape == (2, 8, 9)
    dims = onnx.load(path).graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 8, "tokens_out2"]


class _Strided(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(20, 8)
        self.conv = torch.nn.Conv1d(8, 8, 3, stride=2, padding=1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.conv(self.embed(ids).transpose(1, 2))


class _Positions(torch.nn.Module):
    """Tokens plus a learned position table exactly as long as the example: no longer input."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.positions = torch.nn.Embedding(50, 8), torch.nn.Embedding(12, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        where = torch.arange(ids.shape[1])
        return self.head((self.embed(ids) + self.positions(where)).max(1).values)


class _Baked(torch.nn.Module):
    """Runs at any length in PyTorch, but the exporter fixes the length (a Python int)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.head = torch.nn.Embedding(50, 8), torch.nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids) + torch.zeros(int(ids.shape[1]), 1)
        return self.head(h.max(1).values)


def test_dynamic_axes_mistakes_are_refused_before_any_work(workdir: Path) -> None:
    tokens = load_experiment(TOKENS)
    for axes, said in (
        ({"ids": {1: "sequence"}}, "names input 'ids'; the model's inputs are 'input'"),
        ({"input": {0: "sequence"}}, "dimension 0 is not one past the batch dimension"),
        ({"input": {2: "sequence"}}, "dimension 2 is not one past the batch dimension"),
        ({"input": {1: "batch"}}, "must be a word other than 'batch'"),
        ({"input": {}}, "must map dimensions to labels"),
    ):
        with pytest.raises(EdgeCompressError, match=said):
            replace(tokens, dynamic_axes=axes).validate()
    # a model that flattens its sequence into a Linear cannot take another length: refused,
    # naming the dimension and the size it was tried at
    tiny = replace(load_experiment(TINY), dynamic_axes={"input": {1: "length"}})
    with pytest.raises(EdgeCompressError, match=r"rejects input dimension 1 \('length'\) at size"):
        search(tiny, trials=2, speedup=0.5, storage="sqlite:///x.db", progress=False)
    assert not (workdir / "x.db").exists()  # nothing was created
    # a position table as long as the example: a longer input is refused, at the size tried
    positions = replace(tokens, model=_Positions, dynamic_axes={"input": {1: "sequence"}})
    with pytest.raises(EdgeCompressError, match=r"at size 24 \(the example's 12\)"):
        positions.validate()
    # a length the exporter fixed: PyTorch takes it, ONNX Runtime does not; refused before work
    baked = replace(tokens, model=_Baked, dynamic_axes={"input": {1: "sequence"}})
    baked.validate()
    with pytest.raises(EdgeCompressError, match="the exported model rejects 'sequence' at size"):
        search(baked, trials=2, speedup=0.5, storage="sqlite:///y.db", progress=False)
    assert not (workdir / "y.db").exists()


def test_data_checks_follow_the_dynamic_axes(workdir: Path) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    from tests.token_experiment import make_data

    tokens = load_experiment(TOKENS)
    x, y = make_data(64, 5)
    longer = DataLoader(TensorDataset(torch.cat([x, x], 1), y), batch_size=32)
    fixed = replace(tokens, task=replace(tokens.task, val=longer))
    with pytest.raises(EdgeCompressError, match="input 'input' has shape"):
        fixed.validate()  # a fixed sequence: the length must be the example's
    replace(fixed, dynamic_axes={"input": {1: "sequence"}}).validate()  # any length: accepted
    # samples of several lengths, padded per batch by the user's collate: each batch has its
    # own length, and a split is kept as one array
    many, labels = make_data(600, 6)  # arrays() reads 256 at a time: the first batch's
    samples = [(many[i, : 8 if i < 300 else 12], labels[i]) for i in range(600)]  # length is 8

    def pad(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.nn.utils.rnn.pad_sequence([s for s, _ in batch], batch_first=True)
        return ids, torch.stack([label for _, label in batch])

    ragged = DataLoader(samples, batch_size=8, collate_fn=pad)  # type: ignore[arg-type]
    with pytest.raises(EdgeCompressError, match="'val' split has batches of different shapes"):
        replace(tokens.task, val=ragged).arrays("val")
