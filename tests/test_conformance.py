"""Every compressor passes the conformance checks of ``edgecompress.testing`` on every model of
the zoo: a plain CNN, a residual CNN (additions, a concatenation), depthwise-separable blocks,
an MLP and a small transformer encoder."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from edgecompress.compress import (
    ChannelPruner,
    LowRankFactorizer,
    OnnxQuantizer,
    UnstructuredPruner,
    export_onnx,
    layer_nodes,
    layer_precisions,
)
from edgecompress.plan import Plan
from edgecompress.spaces import TECHNIQUES, AutoSpace, Joint
from edgecompress.tasks import FinetuneSettings
from edgecompress.testing import (
    Compressor,
    check_compressor,
    check_onnx_compressor,
    check_space,
)
from tests.models import EXAMPLE_INPUTS, ZOO


def _space(name: str) -> Joint:
    model, example = ZOO[name](), EXAMPLE_INPUTS[name]
    return AutoSpace(techniques=TECHNIQUES, keep_first_last=False).build(
        model, example[:1], finetune=FinetuneSettings(epochs=1)
    )


def _plan(name: str, section: str, value: float, **method: object) -> Plan:
    keys = [key for k in _space(name).knobs() for key in k.plan_keys()]
    chosen = {key: value for key in keys if key.startswith(section + ".")}
    assert chosen, f"{name}: the space has no {section} knob"
    return Plan({**chosen, **{f"method.{k}": v for k, v in method.items()}})  # type: ignore[dict-item]


CASES = [
    ("prune-l1", "prune", 0.5, {"prune_criterion": "l1"}),
    ("prune-taylor", "prune", 0.5, {"prune_criterion": "taylor", "round_to": 4}),
    ("prune-random", "prune", 0.3, {"prune_criterion": "random"}),
    ("rank-tucker2", "rank", 0.5, {"decomposition": "tucker2"}),
    ("rank-spatial", "rank", 0.4, {"decomposition": "spatial_svd"}),
    ("sparsity-magnitude", "sparsity", 0.6, {"sparsity": "magnitude"}),
    ("sparsity-global", "sparsity", 0.5, {"sparsity": "global", "global_sparsity": 0.7}),
    ("sparsity-random", "sparsity", 0.5, {"sparsity": "random"}),
]
INVALID = {
    "prune": Plan({"prune.no_such_layer": 0.5}),
    "rank": Plan({"rank.no_such_layer": 0.5}),
    "sparsity": Plan({"sparsity.head": 1.0}),
}


def _compressor(section: str, name: str) -> Compressor:
    if section == "prune":
        example = EXAMPLE_INPUTS[name][:1]
        return ChannelPruner(example, batches=lambda: [_batch(name)], seed=0)
    if section == "rank":
        return LowRankFactorizer()
    return UnstructuredPruner(seed=0)


def _batch(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = EXAMPLE_INPUTS[name]
    return x, torch.arange(len(x)) % 4


@pytest.mark.parametrize("model_name", sorted(ZOO))
@pytest.mark.parametrize(("case", "section", "value", "method"), CASES, ids=[c[0] for c in CASES])
def test_compressor_conformance(
    model_name: str, case: str, section: str, value: float, method: dict[str, object]
) -> None:
    plan = _plan(model_name, section, value, **method)
    model, example = ZOO[model_name](), EXAMPLE_INPUTS[model_name]
    compressed = check_compressor(
        _compressor(section, model_name), model, example[:1], plan, invalid_plan=INVALID[section]
    )
    assert compressed(example).shape == model(example).shape
    assert _changed(model, compressed), f"{case} left {model_name} unchanged"


def _changed(before: nn.Module, after: nn.Module) -> bool:
    a, b = before.state_dict(), after.state_dict()
    return a.keys() != b.keys() or any(not torch.equal(a[k], b[k]) for k in a)


FORMS = {  # the plan's bits for a layer, by its position; 4 only where the layer is a MatMul
    "static": lambda i, linear: 8,
    "dynamic": lambda i, linear: 8,
    "fp16": lambda i, linear: 16,
    "int4": lambda i, linear: 4 if linear else 32,
    "mixed": lambda i, linear: (4 if linear else 8, 16, 32, 8)[i % 4],
    "mixed_dynamic": lambda i, linear: (4 if linear else 16, 8)[i % 2],  # int4 next to int8
}
TOLERANCE = {
    "static": 0.25,
    "dynamic": 0.25,
    "fp16": 0.02,
    "int4": 0.5,
    "mixed": 0.5,
    "mixed_dynamic": 0.5,
}
EXPECTED = {4: "int4", 8: "int8", 16: "fp16", 32: "fp32"}


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("model_name", sorted(ZOO))
def test_quantizer_conformance(model_name: str, form: str, tmp_path: Path) -> None:
    model, example = ZOO[model_name](), EXAMPLE_INPUTS[model_name]
    src = export_onnx(model, example[:1], tmp_path / "fp32.onnx")
    nodes = layer_nodes(onnx.load(str(src)))
    g = torch.Generator().manual_seed(0)
    calibration = [torch.randn(8, *example.shape[1:], generator=g).numpy() for _ in range(2)]
    quantizer = OnnxQuantizer(lambda: calibration)
    bits = {
        layer: FORMS[form](i, not node.endswith("/Conv"))
        for i, (layer, node) in enumerate(sorted(nodes.items()))
    }
    settings = {"method.quant": "dynamic"} if form.endswith("dynamic") else {}
    plan = Plan({**{f"bits.{k}": v for k, v in bits.items()}, **settings})
    out = check_onnx_compressor(
        quantizer,
        src,
        plan,
        example.numpy(),
        invalid_plan=Plan({f"bits.{min(nodes)}": 3}),  # 3-bit: the local CPU cannot run it
        tolerance=TOLERANCE[form],
    )
    built = layer_precisions(onnx.load_from_string(out))
    assert {layer: built[layer] for layer in bits} == {k: EXPECTED[b] for k, b in bits.items()}


@pytest.mark.parametrize("model_name", sorted(ZOO))
@pytest.mark.parametrize("stages", [None, 2])
def test_space_conformance(model_name: str, stages: int | None) -> None:
    model, example = ZOO[model_name](), EXAMPLE_INPUTS[model_name]
    space = AutoSpace(techniques=TECHNIQUES, stages=stages).build(
        model, example[:1], finetune=FinetuneSettings(epochs=1)
    )
    check_space(space)
