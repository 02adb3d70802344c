"""The sensitivity profile: a more sensitive layer ranks so; cached; latency from the probe."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from edgecompress.plan import Plan
from edgecompress.search.allocation import choose, options
from edgecompress.search.engine import checked_reference, space_and_dominated, space_of
from edgecompress.search.probe import LatencyProbe
from edgecompress.search.sensitivity import Point, Sensitivity, prune_levels, sensitivity
from edgecompress.spaces import AutoSpace, Knob

# the module, not the function the package exports under its name
PROFILER = importlib.import_module("edgecompress.search.sensitivity")
HALF = 8  # TinyNet's conv2 has 16 output channels: half of them are dead in this model


def dead_half():  # type: ignore[no-untyped-def]
    """The tiny teacher with half of conv2's output channels zeroed: pruning half of that
    group (by L1) removes exactly them and changes nothing; conv1's channels all matter."""
    from tests.tiny_experiment import trained_model

    model = trained_model()
    with torch.no_grad():
        model.conv2.weight[:HALF] = 0
        model.conv2.bias[:HALF] = 0
    return model


@dataclass
class FakeProbe(LatencyProbe):
    """Latency as a function of the plan alone: pruning and int8 make it faster."""

    calls: int = 0

    def _latency_ms(self, plan: Plan, built: Path | None = None) -> float:
        self.calls += 1
        pruned = sum(plan.numbers("prune").values())
        int8 = sum(1 for k, v in plan.items() if k.startswith("bits.") and v == 8)
        return self.reference_ms * (1.0 - 0.2 * pruned - 0.1 * int8)


def _setup(tiny):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    experiment = replace(tiny, model=dead_half, space=AutoSpace(techniques=("prune", "bits")))
    reference = checked_reference(experiment)
    return experiment, space_of(experiment, reference), reference


def test_the_more_sensitive_group_ranks_so_and_the_profile_is_cached(tiny) -> None:  # type: ignore[no-untyped-def]
    experiment, space, reference = _setup(tiny)
    probe = FakeProbe(experiment, reference, 1.0)
    profile = sensitivity(experiment, space, probe)
    by_ratio = {n: {p.value: p for p in points} for n, points in profile.prune.items()}
    assert set(by_ratio) == {"prune.conv1", "prune.conv2"}
    # only the dead channels went (what is left is the batch norms' re-estimated statistics)
    assert by_ratio["prune.conv2"][0.5].damage < 1e-4
    assert by_ratio["prune.conv1"][0.5].damage > 100 * by_ratio["prune.conv2"][0.5].damage
    assert by_ratio["prune.conv1"][0.9].damage > by_ratio["prune.conv1"][0.25].damage
    # latency from the probe, as a ratio to the reference, on top of the (faster) int8 base
    knobs = {k.name: k for k in space.knobs()}
    assert {knobs[k].choices[profile.base_params[k]] for k in profile.bits} == {8}
    assert profile.base_ratio == pytest.approx(1.0 - 0.1 * len(profile.bits))
    assert by_ratio["prune.conv1"][0.5].ratio == pytest.approx(profile.base_ratio - 0.1)
    # each precision the layers may take instead, with its damage and latency
    widths = {n: sorted(p.value for p in points) for n, points in profile.bits.items()}
    assert all(32.0 in w for w in widths.values())
    rows = profile.rows(reference_ms=2.0)
    assert {"knob", "value", "damage", "saved_ms"} <= set(rows[0])
    assert next(r for r in rows if r["knob"] == "prune.conv1" and r["value"] == 0.5)[
        "saved_ms"
    ] == pytest.approx(0.2)

    calls = probe.calls
    again = sensitivity(experiment, space, FakeProbe(experiment, reference, 1.0))
    assert again == profile and probe.calls == calls  # from the cache, nothing measured


def test_levels_stop_at_the_knobs_most() -> None:
    from edgecompress.spaces import Knob

    knob = Knob(name="prune.x", kind="float", low=0.0, high=0.6, step=0.05, identity=0.0)
    assert prune_levels(knob) == [0.25, 0.5, 0.6]


@dataclass
class AlignedProbe(LatencyProbe):
    """A runtime like the one a 2-D MobileNet met here: pruned widths run fast only when
    aligned to 16 channels (unaligned, pruning even slows the model down), and int8 is slower
    than fp32 at every ratio."""

    def _latency_ms(self, plan: Plan, built: Path | None = None) -> float:
        pruned = sum(plan.numbers("prune").values())
        int8 = sum(1 for k, v in plan.items() if k.startswith("bits.") and v == 8)
        aligned = plan.get("method.round_to", 1) == 16
        speed = (1.0 - 0.3 * pruned) if aligned else (1.0 + 0.2 * pruned)
        return self.reference_ms * speed * (1.0 + 0.1 * int8)


def test_the_base_takes_the_alignment_and_precision_measured_fastest(tiny) -> None:  # type: ignore[no-untyped-def]
    from edgecompress.search.allocation import floor

    experiment, space, reference = _setup(tiny)
    probe = AlignedProbe(experiment, reference, 1.0)
    profile = sensitivity(experiment, space, probe, cache=False)
    knobs = {k.name: k for k in space.knobs()}
    align = knobs["method.round_to"]
    assert align.choices[profile.base_params["method.round_to"]] == 16
    assert all(knobs[k].choices[profile.base_params[k]] == 32 for k in profile.bits)  # fp32
    # every candidate was measured (fp32, static and dynamic int8 at each alignment), and the
    # chosen one is recorded as such
    assert len(profile.bases) == 3 * len(align.choices)
    assert {b["precision"] for b in profile.bases} == {"teacher", "int8", "int8 dynamic"}
    assert [(b["precision"], b["round_to"]) for b in profile.bases if b["chosen"]] == [
        ("teacher", 16)
    ]
    # the profile's pruning points are aligned, so they save latency instead of costing it
    assert all(p.ratio < profile.base_ratio for pts in profile.prune.values() for p in pts)
    # and the allocations built on the base keep it: the fastest plan is fp32, aligned
    lowest = floor(profile, space, probe)
    assert align.choices[lowest.params["method.round_to"]] == 16
    assert lowest.latency_ms < profile.base_ratio * probe.reference_ms


@dataclass
class DynamicProbe(LatencyProbe):
    """A runtime like the one the pretrained MiniLM met here: dynamic int8 is the fastest
    precision (static int8 pays less)."""

    def _latency_ms(self, plan: Plan, built: Path | None = None) -> float:
        pruned = sum(plan.numbers("prune").values())
        int8 = sum(1 for k, v in plan.items() if k.startswith("bits.") and v == 8)
        gain = 0.2 if plan.get("method.quant") == "dynamic" else 0.1
        return self.reference_ms * (1.0 - 0.2 * pruned) * (1.0 - gain * int8)


def test_dynamic_int8_is_the_base_where_it_measures_fastest(tiny) -> None:  # type: ignore[no-untyped-def]
    from edgecompress.search.allocation import floor

    experiment, space, reference = _setup(tiny)
    probe = DynamicProbe(experiment, reference, 1.0)
    profile = sensitivity(experiment, space, probe, cache=False)
    knobs = {k.name: k for k in space.knobs()}
    assert profile.base_params["method.quant"] == "dynamic"
    assert all(knobs[k].choices[profile.base_params[k]] == 8 for k in profile.bits)
    assert [b["precision"] for b in profile.bases if b["chosen"]] == ["int8 dynamic"]
    assert profile.base_ratio == pytest.approx(1.0 - 0.2 * len(profile.bits))
    assert floor(profile, space, probe).params["method.quant"] == "dynamic"  # allocations keep it
    # where static measures fastest (FakeProbe ignores the method: a tie), static stays
    static = sensitivity(experiment, space, FakeProbe(experiment, reference, 1.0), cache=False)
    assert static.base_params["method.quant"] == "static"


def test_an_alignment_that_changes_nothing_leaves_the_finest(tiny) -> None:  # type: ignore[no-untyped-def]
    experiment, space, reference = _setup(tiny)
    profile = sensitivity(experiment, space, FakeProbe(experiment, reference, 1.0), cache=False)
    knobs = {k.name: k for k in space.knobs()}
    assert knobs["method.round_to"].choices[profile.base_params["method.round_to"]] == 1
    assert {b["precision"] for b in profile.bases if b["chosen"]} == {"int8"}


def _dominating_profile() -> Sensitivity:
    """int8 base at half the reference's latency; fp16 slower and less faithful than it, fp32
    slower but more faithful, int4 faster; pruning a quarter saves nothing, half does; the
    teacher's precision slower at every level, alignment 16 faster at the most."""
    bits = Knob(name="bits.a", kind="ordinal", choices=(4, 8, 16, 32), identity=32, fastest=4)
    return Sensitivity(
        base_params={"prune.a": 0.0, "bits.a": bits.param(8)},
        base_damage=0.01,
        base_ratio=0.5,
        prune={"prune.a": (Point(0.25, 0.1, 0.55), Point(0.5, 0.2, 0.4))},
        bits={"bits.a": (Point(4.0, 0.5, 0.45), Point(16.0, 0.02, 0.7), Point(32.0, 0.0, 0.8))},
        bases=(
            {"precision": "int8", "round_to": 1, "ratios": [0.5, 0.3], "chosen": True},
            {"precision": "teacher", "round_to": 1, "ratios": [1.0, 0.6], "chosen": False},
            {"precision": "int8", "round_to": 16, "ratios": [0.5, 0.25], "chosen": False},
        ),
    )


def test_dominated_options_are_named_and_never_allocated() -> None:
    profile = _dominating_profile()
    found = {(d["knob"], d["value"]): d["why"] for d in profile.dominated()}
    assert set(found) == {("bits.a", 16.0), ("prune.a", 0.25), ("base", "teacher, round_to 1")}
    assert "1.40x the base plan's latency" in found[("bits.a", 16.0)]
    assert "saves no latency" in found[("prune.a", 0.25)]
    knobs = {
        "prune.a": Knob(
            name="prune.a", kind="float", low=0.0, high=0.5, step=0.05, identity=0.0, fastest=0.5
        ),
        "bits.a": Knob(name="bits.a", kind="ordinal", choices=(4, 8, 16, 32), identity=32),
    }
    opts = options(profile, knobs)
    for lam in (0.0, 0.01, 0.1, 1.0, 10.0, 100.0):  # whatever saving is asked for
        chosen, _, _ = choose(opts, lam)
        assert chosen["prune.a"] != 0.25 and chosen["bits.a"] != knobs["bits.a"].param(16)


def test_space_names_what_the_cached_profile_found_dominated(workdir, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from edgecompress import load_experiment
    from edgecompress.cli import main
    from edgecompress.search.sensitivity import VERSION, _cache_path
    from tests.conftest import TINY

    experiment = load_experiment(TINY)
    reference = checked_reference(experiment)
    space = space_of(experiment, reference)
    path = _cache_path(experiment, space, LatencyProbe(experiment, reference, 1.0))
    kept = path.read_bytes() if path.exists() else None  # another test's profile, put back
    try:
        path.unlink(missing_ok=True)
        assert main(["space", TINY]) == 0
        assert "no sensitivity profile of this space is cached" in capsys.readouterr().out
        path.write_text("{not json")  # a cache file cut short reads as none, not a traceback
        assert main(["space", TINY]) == 0
        assert "no sensitivity profile of this space is cached" in capsys.readouterr().out
        profile = _dominating_profile().to_dict()
        path.write_text(json.dumps({"version": VERSION, "profile": profile}))
        assert main(["space", TINY]) == 0
        out = capsys.readouterr().out
        assert "dominated on this machine" in out and "no sensitivity profile" not in out
        assert "bits.a" in out and "saves no latency" in out and "teacher, round_to 1" in out
        assert main(["space", TINY, "--format", "json"]) == 0  # its list is as before
        entries = json.loads(capsys.readouterr().out)
        assert {e["kind"] for e in entries} <= {
            "float",
            "int",
            "ordinal",
            "choice",
            "fixed",
            "skipped",
        }
        _, _, dominated = space_and_dominated(experiment)
        assert dominated is not None
        assert {(d["knob"], d["value"]) for d in dominated} == {
            ("bits.a", 16.0),
            ("prune.a", 0.25),
            ("base", "teacher, round_to 1"),
        }
    finally:
        path.unlink(missing_ok=True)
        if kept is not None:
            path.write_bytes(kept)


@dataclass
class HalfProbe(FakeProbe):
    """FakeProbe with fp16 on each layer that runs it ``half`` times as long as fp32 (most
    CPUs have no fast fp16 kernels: > 1)."""

    half: float = 1.3

    def _latency_ms(self, plan: Plan, built: Path | None = None) -> float:
        fp16 = sum(1 for k, v in plan.items() if k.startswith("bits.") and v == 16)
        return super()._latency_ms(plan) * self.half**fp16


def test_a_width_no_faster_and_less_faithful_on_every_layer_is_not_profiled_per_layer(
    tiny, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    experiment, space, reference = _setup(tiny)
    # a small model: every layer is profiled at every width, fp16 included
    cheap = sensitivity(experiment, space, HalfProbe(experiment, reference, 1.0), cache=False)
    assert cheap.screened == () and len(cheap.uniform) > 0
    assert all(16.0 in {p.value for p in pts} for pts in cheap.bits.values())
    monkeypatch.setattr(PROFILER, "LARGE_MODEL", 0)  # every model counts as large
    knobs = {k.name: k for k in space.knobs() if k.section == "bits" and k.kind == "ordinal"}
    assert all(16 in k.choices and 32 in k.choices for k in knobs.values())
    slow = sensitivity(experiment, space, HalfProbe(experiment, reference, 1.0), cache=False)
    # every width other than the base's int8 was built once with every layer at it
    others = {float(c) for k in knobs.values() for c in k.choices} - {8.0}
    assert {p.value for p in slow.uniform} == others
    uniform = {p.value: p for p in slow.uniform}
    assert uniform[16.0].ratio > uniform[32.0].ratio and uniform[16.0].damage > 0
    # fp16: slower than fp32 everywhere and less faithful, so no layer is profiled at it, and
    # `space`/`profile` say why; fp32 (slower than int8 but more faithful) is profiled per layer
    assert 16.0 in slow.screened and 32.0 not in slow.screened
    assert all(16.0 not in {p.value for p in pts} for pts in slow.bits.values())
    assert all(32.0 in {p.value for p in pts} for pts in slow.bits.values())
    why = {d["value"]: d["why"] for d in slow.dominated() if d["knob"] == "bits (every layer)"}
    assert 16.0 in why and "no faster than every layer at 32" in why[16.0]
    # where fp16 pays (faster than the int8 base), each layer is profiled at it
    fast = sensitivity(
        experiment, space, HalfProbe(experiment, reference, 1.0, half=0.5), cache=False
    )
    assert 16.0 not in fast.screened
    assert all(16.0 in {p.value for p in pts} for pts in fast.bits.values())
    assert {p.value for p in fast.uniform} == others


def test_a_large_model_times_two_levels_per_group_and_interpolates_the_rest(
    tiny, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    experiment, space, reference = _setup(tiny)
    full = sensitivity(experiment, space, FakeProbe(experiment, reference, 1.0), cache=False)
    assert all(p.measured for pts in full.prune.values() for p in pts)
    monkeypatch.setattr(PROFILER, "LARGE_MODEL", 0)  # every model counts as large
    probe = FakeProbe(experiment, reference, 1.0)
    sparse = sensitivity(experiment, space, probe, cache=False)
    for name, points in sparse.prune.items():
        levels = [p.value for p in points]
        assert levels == [p.value for p in full.prune[name]]  # damage still at every level
        assert [p.value for p in points if p.measured] == [0.5, levels[-1]]
        for p, q in zip(points, full.prune[name], strict=True):
            assert p.damage == pytest.approx(q.damage, rel=1e-6)
            # FakeProbe's latency is linear in the ratio: the interpolation is exact
            assert p.ratio == pytest.approx(q.ratio)
    # fewer plans built than with every level timed
    dense = FakeProbe(experiment, reference, 1.0)
    monkeypatch.setattr(PROFILER, "LARGE_MODEL", 10**12)
    sensitivity(experiment, space, dense, cache=False)
    assert probe.calls < dense.calls
