"""The rules every compressor and space follows, as checks."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import onnxruntime as ort
import optuna
import torch
from torch import nn

from edgecompress.compress import export_onnx, finalize
from edgecompress.plan import InvalidPlan, Plan
from edgecompress.spaces import Space


@runtime_checkable
class Compressor(Protocol):
    def apply(self, model: nn.Module, plan: Plan) -> tuple[nn.Module, dict[str, Any]]: ...


def _report(report: object, what: str) -> dict[str, Any]:
    """A report is a dict of JSON values (the pipeline keeps it in the trial's notes)."""
    assert isinstance(report, dict), f"{what} must return a report dict, got {type(report)}"
    try:
        json.dumps(report)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{what}'s report is not JSON: {exc}") from None
    return report


def check_compressor(
    compressor: Compressor,
    model: nn.Module,
    example_input: torch.Tensor,
    plan: Plan,
    *,
    invalid_plan: Plan | None = None,
    seed: int = 0,
) -> nn.Module:
    """A compressor returns ``(model, report)``: a new model, never its input mutated, and a
    report of JSON values; both are the same under one seed; the model exports to ONNX with
    an output that matches PyTorch's (rtol 1e-3, atol 1e-5); a plan it cannot build raises
    ``InvalidPlan``. Returns the compressed model."""
    model = model.eval()
    before = _snapshot(model)
    torch.manual_seed(seed)
    out = compressor.apply(model, plan)
    assert isinstance(out, tuple) and len(out) == 2, "apply() must return (model, report)"
    first, report = out[0], _report(out[1], "apply()")
    assert isinstance(first, nn.Module), "apply()'s first value must be the model"
    assert first is not model, "apply() must return a new model, not its input"
    _assert_same(before, _snapshot(model), "apply() changed its input model")
    torch.manual_seed(seed)
    second, again = compressor.apply(model, plan)
    _assert_same(_snapshot(first), _snapshot(second), "two apply() under one seed differ")
    assert report == again, f"two apply() under one seed report differently: {report} {again}"
    check_onnx_parity(first, example_input)
    if invalid_plan is not None:
        try:
            compressor.apply(model, invalid_plan)
        except InvalidPlan:
            pass
        else:
            raise AssertionError(f"apply() accepted a plan it cannot build: {dict(invalid_plan)}")
        _assert_same(before, _snapshot(model), "a refused plan changed the input model")
    return first


def check_onnx_parity(
    model: nn.Module, example_input: torch.Tensor, *, batch: int = 3, seed: int = 0
) -> None:
    """Exported to ONNX, the model's ONNX Runtime output matches PyTorch's.

    Weight masks are baked into the weights first (``finalize``, in place: the function stays
    the same; a masked module cannot be deep-copied).
    """
    deployed = finalize(model).eval()
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, *example_input.shape[1:])
    x = torch.randn(shape, generator=generator, dtype=example_input.dtype)
    with torch.no_grad():
        expected = deployed(x).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(deployed, example_input, Path(tmp) / "check.onnx")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(
        got, expected, rtol=1e-3, atol=1e-5, err_msg="ONNX Runtime output differs from PyTorch"
    )


class OnnxCompressor(Protocol):
    def apply(self, src: Path, dst: Path, plan: Plan) -> dict[str, Any]: ...


def check_onnx_compressor(
    compressor: OnnxCompressor,
    src: Path,
    plan: Plan,
    example_input: np.ndarray,
    *,
    invalid_plan: Plan | None = None,
    tolerance: float = 0.1,
) -> bytes:
    """The same rules for a compressor of ONNX files (e.g. quantization), whose ``apply(src,
    dst, plan)`` writes ``dst`` and returns its report: the source file is untouched, the
    output and the report are the same for the same plan, it runs and stays within
    ``tolerance`` x the largest output of the source, and a plan it cannot build raises
    ``InvalidPlan`` and writes nothing. Returns the compressed model's bytes (files are
    written to a temporary folder only)."""
    src = Path(src)
    before = src.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        out, again = Path(tmp) / "a.onnx", Path(tmp) / "b.onnx"
        report = _report(compressor.apply(src, out, plan), "apply()")
        second = compressor.apply(src, again, plan)
        assert src.read_bytes() == before, "apply() changed its source file"
        assert out.read_bytes() == again.read_bytes(), "two apply() with one plan differ"
        assert report == second, "two apply() with one plan report differently"
        expected = _run(src, example_input)
        got = _run(out, example_input)
        int8 = out.read_bytes()
        if invalid_plan is not None:
            target = Path(tmp) / "invalid.onnx"
            try:
                compressor.apply(src, target, invalid_plan)
            except InvalidPlan:
                assert not target.exists(), "a refused plan left an output file"
            else:
                raise AssertionError(f"apply() accepted a plan it cannot build: {invalid_plan}")
    bound = tolerance * float(np.abs(expected).max())
    np.testing.assert_allclose(got, expected, rtol=0, atol=bound, err_msg="output drifted")
    return int8


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x})
    return np.asarray(out)


def check_space(space: Space, *, samples: int = 5, seed: int = 0) -> None:
    """Every knob is described and has an identity; sampling writes exactly the knobs' plan
    entries; a trial's parameters replay to the same plan (``FixedTrial``)."""
    knobs = space.knobs()
    names = [k.name for k in knobs]
    assert len(names) == len(set(names)), f"knob names repeat: {names}"
    keys = {key for k in knobs for key in k.plan_keys()}
    missing = [k.name for k in knobs if k.kind != "fixed" and k.identity is None]
    assert not missing, f"knobs without an identity (no uncompressed baseline): {missing}"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(samples):
        trial = study.ask()
        plan = space.sample(trial)
        assert set(plan) == keys, f"plan entries {sorted(set(plan) ^ keys)} do not match knobs"
        replay = space.sample(optuna.trial.FixedTrial(trial.params))  # type: ignore[arg-type]
        assert replay == plan, f"replaying {trial.params} gave {dict(replay)}, not {dict(plan)}"
        study.tell(trial, 0.0)
    identity = {k.name: k.param(k.identity) for k in knobs if k.identity is not None}
    baseline = space.sample(optuna.trial.FixedTrial(identity))  # type: ignore[arg-type]
    assert set(baseline) == keys, "the identity parameters do not build a whole plan"


def _snapshot(model: nn.Module) -> tuple[str, dict[str, torch.Tensor]]:
    return repr(model), {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(
    a: tuple[str, dict[str, torch.Tensor]], b: tuple[str, dict[str, torch.Tensor]], what: str
) -> None:
    assert a[0] == b[0], f"{what}: the module structure differs"
    assert a[1].keys() == b[1].keys(), f"{what}: the parameters differ in name"
    for name, tensor in a[1].items():
        assert torch.equal(tensor, b[1][name]), f"{what}: parameter {name} differs"
