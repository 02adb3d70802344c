"""The sensitivity profile: what each knob costs in fidelity and saves in latency, before training.

Computed once per model, space, target and latency source, and cached (``$EDGECOMPRESS_CACHE``):

- **base**: the plan every profile point starts from: the precision (the teacher's, or int8
  where the space has precision knobs: static, and dynamic where ``method.quant`` offers it)
  and the channel alignment (``method.round_to``) whose
  uniform plans measure fastest here, at no pruning, half and the most (``BASE_LEVELS``): on a
  2-D network whose depthwise convolutions leave the runtime's fast blocked-layout kernels at
  odd widths, 30% of every group's channels pruned measured 0.44x the teacher's speed with
  widths as they fell and 1.9x with widths rounded to 16, and int8 was slower than fp32 at
  every ratio; on the 1-D examples int8 pays and the alignment moves latency by a few percent;
  on the pretrained MiniLM, dynamic int8 measured 2.5x faster than fp32 unpruned and static
  2.05x (its profile; bench/minilm_int8.py: 3.6x and 2.7x on another machine, the embeddings at
  a cosine of 0.993 to the teacher's against static's 0.936).
  Every allocation is built on this base;
- **prune**: each channel group alone at a ladder of ratios (``LEVELS``, up to the knob's most),
  on top of the base. Its *damage* is the task's divergence of the pruned model's outputs from
  the teacher's (``SupervisedTask.divergence``: the KL divergence of the softmax in
  classification, the squared difference relative to the outputs' variance in regression), in
  PyTorch, after the batch-norm statistics are re-estimated on training data (no
  fine-tuning); its latency is the base plan with that group pruned, built untrained and
  measured (or predicted from the target's table);
- **bits**: each width the layers may take besides the base's (fp32, fp16, int4, ...), first on
  every layer at once (``uniform``, reported beside the rest), then each layer alone at each
  width, with the rest of the base: the deployed ONNX file's divergence from the teacher, and its
  latency, measured on that same file (one build per point).

A model of more than ``LARGE_MODEL`` parameters (the pretrained MiniLM, 22.7M: 10-15 s a build,
181 points, 43 minutes before this rule; the CNNs and the MLP here, 0.1-3.2M: under 2 s) is
profiled more sparsely: each group's pruning latency is measured at two levels (nearest half,
and the most) and interpolated at the others, where its damage is still measured; and a width
whose every-layer plan measures no faster (within ``SCREEN_TIE``) than the base's or another
width's, and no more faithful, is ``screened`` (fp16 on a CPU without fp16 kernels): not
profiled layer by layer, never allocated. That screen is a heuristic: the every-layer plan of
each width covers the layers that may take it (int4 only the MatMuls), and a width that loses on
every layer at once may still pay on the largest; where builds are cheap every layer is
profiled at every width.

Latencies are kept as ratios to the reference model, so a cached profile serves a later study
whose reference was timed at another moment. Damage is measured on the first ``SAMPLES``
training inputs: the validation split stays for selection.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecompress.compress import ChannelPruner, compress
from edgecompress.compress.pipeline import check_output_shape
from edgecompress.errors import EdgeCompressError
from edgecompress.evaluators.metrics import onnx_outputs
from edgecompress.experiment import Experiment
from edgecompress.inputs import call, rows, take, to_torch
from edgecompress.plan import InvalidPlan, Plan
from edgecompress.search.probe import LatencyProbe
from edgecompress.spaces import Knob, Space, baseline_params, describe, on_grid, replay
from edgecompress.targets import describe_device

LEVELS = (0.25, 0.5, 0.75, 0.9)
BASE_LEVELS = (0.5, 1.0)  # uniform pruning levels (shares of each knob's most) a base is timed at
ALIGNMENT_TIE = 0.03  # alignments within this (mean log latency) of the fastest: the finest
SAMPLES = 512
# a width whose every-layer plan is at most this much faster than a more faithful alternative's
# (the base, or another width on every layer) is not profiled layer by layer
SCREEN_TIE = 0.03
# a model of more parameters than this (a 22M-parameter transformer: 10-15 s a build here; the
# 1-D and 2-D CNNs and the MLP, up to 3.2M: under 2 s) has each group's pruning latency measured
# at two levels, not at each (its damage, in PyTorch, is cheap at every level), and widths
# screened on every layer first. Decided by the model, not by a timing: the profile is cached.
LARGE_MODEL = 10_000_000
BASE_WIDTH = 0.0  # the base's entry among the alternatives a width is screened against
EVERY = "bits (every layer)"  # how a width on every layer is named in reports
VERSION = 4  # v4: widths screened on every layer first; v3: dynamic int8 a candidate base; v2:
# bases timed at pruned levels too

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Point:
    """One knob at one value: the damage (the task's divergence from the teacher; KL in nats for
    classification) and the latency as a ratio to the reference."""

    value: float
    damage: float
    ratio: float
    measured: bool = True  # False: the latency is interpolated (see ``LARGE_MODEL``)


@dataclass(frozen=True)
class Sensitivity:
    """The profile of one experiment's space on one target (see the module docstring)."""

    base_params: dict[str, Any]
    base_damage: float
    base_ratio: float
    prune: dict[str, tuple[Point, ...]]
    bits: dict[str, tuple[Point, ...]]
    # the bases measured: precision, alignment, latency ratio at each of BASE_LEVELS' levels
    bases: tuple[dict[str, Any], ...] = ()
    # each width with every layer that may take it at it (the rest of the base), and the widths
    # those uniform plans screened out (see ``_screened_by``): not profiled layer by layer
    uniform: tuple[Point, ...] = ()
    screened: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sensitivity:
        def points(section: dict[str, Any]) -> dict[str, tuple[Point, ...]]:
            return {k: tuple(Point(**p) for p in v) for k, v in section.items()}

        return cls(
            base_params=dict(data["base_params"]),
            base_damage=float(data["base_damage"]),
            base_ratio=float(data["base_ratio"]),
            prune=points(data["prune"]),
            bits=points(data["bits"]),
            bases=tuple(dict(b) for b in data.get("bases", ())),
            uniform=tuple(Point(**p) for p in data.get("uniform", ())),
            screened=tuple(float(v) for v in data.get("screened", ())),
        )

    def dominated(self) -> list[dict[str, Any]]:
        """The options this target makes pointless, and why: a width measured no faster than
        the base's and no more faithful, a pruning ratio that saves no latency, a base (a
        precision and alignment) whose uniform plans measured slower at every level than the
        chosen one's. An allocation never takes the first two (any saving it asks for is
        cheaper elsewhere); the third is why the base is what it is."""
        found = []
        for value in self.screened:
            here = next(p for p in self.uniform if p.value == value)
            by = _screened_by(here, self._alternatives())
            what = (
                "the base"
                if by is None or by.value == BASE_WIDTH
                else f"every layer at {by.value:g}"
            )
            found.append(
                {
                    "knob": EVERY,
                    "value": value,
                    "why": f"with every layer at {value:g}: {here.ratio / self.base_ratio:.2f}x "
                    f"the base plan's latency, no faster than {what} and no more faithful; "
                    "not profiled layer by layer",
                }
            )
        for name, points in self.bits.items():
            for p in points:
                if p.ratio >= self.base_ratio and p.damage >= self.base_damage:
                    found.append(
                        {
                            "knob": name,
                            "value": p.value,
                            "why": f"{p.ratio / self.base_ratio:.2f}x the base plan's latency "
                            "and no more faithful to the teacher",
                        }
                    )
        for name, points in self.prune.items():
            for p in points:
                if p.measured and p.ratio >= self.base_ratio:
                    found.append(
                        {
                            "knob": name,
                            "value": p.value,
                            "why": f"saves no latency here ({p.ratio / self.base_ratio:.2f}x "
                            "the base plan's)",
                        }
                    )
        chosen = next((b for b in self.bases if b.get("chosen")), None)
        for b in self.bases:
            if chosen is None or b is chosen or len(b["ratios"]) != len(chosen["ratios"]):
                continue
            if all(r >= c for r, c in zip(b["ratios"], chosen["ratios"], strict=True)):
                speedups = ", ".join(f"{1 / r:.2f}x" for r in b["ratios"])
                found.append(
                    {
                        "knob": "base",
                        "value": f"{b['precision']}, round_to {b['round_to']}",
                        "why": f"its uniform plans measured slower at every level ({speedups} "
                        f"against the chosen {chosen['precision']}, round_to "
                        f"{chosen['round_to']})",
                    }
                )
        return found

    def _alternatives(self) -> list[Point]:
        return [Point(BASE_WIDTH, self.base_damage, self.base_ratio), *self.uniform]

    def rows(self, reference_ms: float) -> list[dict[str, Any]]:
        """One row per profiled point: knob, value, damage, the latency it saves (ms, > 0
        faster than the base) and whether that latency was measured (or interpolated between
        measured levels, see ``LARGE_MODEL``); then each width on every layer
        (``bits (every layer)``)."""
        sections = (("prune", self.prune), ("bits", self.bits), ("bits", {EVERY: self.uniform}))
        return [
            {
                "knob": name,
                "value": p.value,
                "damage": p.damage - (self.base_damage if section == "bits" else 0.0),
                "saved_ms": (self.base_ratio - p.ratio) * reference_ms,
                "timed": p.measured,
            }
            for section, profile in sections
            for name, points in profile.items()
            for p in points
        ]


def sensitivity(
    experiment: Experiment,
    space: Space,
    probe: LatencyProbe,
    *,
    progress: Progress | None = None,
    cache: bool = True,
) -> Sensitivity:
    """The profile of ``experiment``'s ``space``, from the cache or measured now (minutes)."""
    path = _cache_path(experiment, space, probe)
    if cache and path.exists():
        return Sensitivity.from_dict(json.loads(path.read_text())["profile"])
    try:
        profile = _Profiler(experiment, space, probe, progress or (lambda _: None)).run()
    except InvalidPlan as exc:  # a knob's value that breaks the model (a search checks first)
        raise EdgeCompressError(
            f"the sensitivity profile met a plan that cannot be built: {exc}"
        ) from None
    if cache:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": VERSION, "profile": profile.to_dict()}))
        tmp.replace(path)
    return profile


def cached(experiment: Experiment, space: Space, probe: LatencyProbe) -> Sensitivity | None:
    """The cached profile of ``experiment``'s ``space`` on this target, without measuring;
    None if none was measured here (or the cached file cannot be read: a search measures it
    again)."""
    path = _cache_path(experiment, space, probe)
    try:
        return Sensitivity.from_dict(json.loads(path.read_text())["profile"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _cache_path(experiment: Experiment, space: Space, probe: LatencyProbe) -> Path:
    costing = probe.costing
    key = {
        "version": VERSION,
        "model": hashlib.sha256(probe.reference.onnx).hexdigest(),
        "space": describe(space),
        "target": experiment.target.to_dict(),
        "task": type(experiment.task).__qualname__,  # its divergence measures the damage
        "latency": [costing.target, costing.latency] if costing else "live",
        "device": describe_device()["cpu_model"],
        "levels": LEVELS,
        "samples": SAMPLES,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    base = Path(os.environ.get("EDGECOMPRESS_CACHE", Path.home() / ".cache" / "edgecompress"))
    base.mkdir(parents=True, exist_ok=True)
    return base / f"sensitivity-{experiment.name}-{digest[:16]}.json"


def _screened_by(width: Point, alternatives: list[Point]) -> Point | None:
    """The alternative (the base, or another width on every layer) that makes ``width``
    pointless: no more than ``SCREEN_TIE`` slower and more faithful (or as faithful and
    faster); None when none does."""
    for other in alternatives:
        if other.value == width.value or other.ratio > width.ratio * (1 + SCREEN_TIE):
            continue
        if other.damage < width.damage or (
            other.damage == width.damage and other.ratio < width.ratio
        ):
            return other
    return None


def prune_levels(knob: Knob) -> list[float]:
    """The profiled ratios of a pruning knob: ``LEVELS`` below its most, and its most."""
    high = float(knob.high or 0.0)
    return sorted({*(lv for lv in LEVELS if lv < high - 1e-9), high} - {0.0})


class _Profiler:
    def __init__(
        self, experiment: Experiment, space: Space, probe: LatencyProbe, progress: Progress
    ) -> None:
        self.experiment, self.space, self.probe, self.progress = experiment, space, probe, progress
        self.knobs = {k.name: k for k in space.knobs()}
        self.base, self.bases = self._base()
        x, _ = experiment.task.arrays("train")
        self.x = take(x, 0, SAMPLES)
        self.teacher = experiment.model().eval()
        with torch.no_grad():
            self.teacher_outputs = call(self.teacher, to_torch(self.x))

    def _base(self) -> tuple[dict[str, Any], tuple[dict[str, Any], ...]]:
        """The precision and channel alignment whose uniform plans are fastest here (see the
        module docstring), and what each candidate measured."""
        precisions = {"teacher": baseline_params(self.space, "teacher")}
        if any(k.section == "bits" and k.kind != "fixed" for k in self.knobs.values()):
            precisions["int8"] = int8 = baseline_params(self.space, "int8")
            quant = self.knobs.get("method.quant")
            dynamic = quant is not None and quant.kind != "fixed" and "dynamic" in quant.choices
            if quant is not None and dynamic and int8.get(quant.name) != "dynamic":
                precisions["int8 dynamic"] = {**int8, quant.name: quant.param("dynamic")}
        align = self.knobs.get("method.round_to")
        prune = [k for k in self.knobs.values() if k.section == "prune" and k.kind == "float"]
        alignments = (
            [None] if align is None or align.kind == "fixed" or not prune else list(align.choices)
        )
        measured: list[dict[str, Any]] = []
        for precision, params in precisions.items():
            self.progress(f"base: {precision}")
            unpruned = self.probe(replay(self.space, params)) / self.probe.reference_ms
            for alignment in alignments:
                at = (
                    {}
                    if align is None or alignment is None
                    else {align.name: align.param(alignment)}
                )
                ratios = [unpruned]
                for level in BASE_LEVELS if prune else ():
                    self.progress(f"base: {precision}, round_to {alignment}, at {level:g}")
                    pruned = {k.name: on_grid(k, level) for k in prune if k.fastest is not None}
                    plan = replay(self.space, {**params, **at, **pruned})
                    ratios.append(self.probe(plan) / self.probe.reference_ms)
                score = float(np.mean(np.log(ratios)))
                measured.append(
                    {
                        "precision": precision,
                        "round_to": alignment,
                        "ratios": ratios,
                        "score": score,
                        "params": {**params, **at},
                    }
                )
        best = min(m["score"] for m in measured)
        close = [m for m in measured if m["score"] <= best + ALIGNMENT_TIE]
        # among near-ties, the precision of the fastest and the finest alignment (more choice)
        fastest = min(measured, key=lambda m: m["score"])
        same = [m for m in close if m["precision"] == fastest["precision"]]
        chosen = min(same, key=lambda m: (m["round_to"] or 0, m["score"]))
        bases = tuple(
            {k: v for k, v in m.items() if k != "params"} | {"chosen": m is chosen}
            for m in measured
        )
        return dict(chosen["params"]), bases

    def plan(self, changes: dict[str, Any]) -> Plan:
        return replay(self.space, {**self.base, **changes})

    def run(self) -> Sensitivity:
        base_damage, base_ratio = self.deployed({})
        # a large model (slow to build): pruning latencies at two levels per group
        sparse = sum(p.numel() for p in self.teacher.parameters()) > LARGE_MODEL
        prune = {
            name: self.group(name, prune_levels(knob), base_ratio, sparse=sparse)
            for name, knob in self.knobs.items()
            if knob.section == "prune" and knob.kind == "float" and knob.fastest is not None
        }
        knobs = {
            name: knob
            for name, knob in self.knobs.items()
            if knob.section == "bits" and knob.kind == "ordinal"
        }
        uniform = self.uniform(knobs)
        base = Point(BASE_WIDTH, base_damage, base_ratio)
        # screened only on a large model: on a small one each layer is profiled at each width
        # (a width that loses on every layer at once may still pay on the largest)
        screened = tuple(
            p.value for p in uniform if sparse and _screened_by(p, [base, *uniform]) is not None
        )
        bits = {
            name: tuple(
                Point(float(c), *self.deployed({name: knob.param(c)}))
                for c in knob.choices
                if knob.param(c) != self.base.get(name) and float(c) not in screened
            )
            for name, knob in knobs.items()
        }
        return Sensitivity(
            self.base, base_damage, base_ratio, prune, bits, self.bases, uniform, screened
        )

    def uniform(self, knobs: dict[str, Knob]) -> tuple[Point, ...]:
        """Each width the precision knobs offer besides the base's, with every layer that may
        take it at it: one build each, where profiling a width layer by layer costs one per
        layer."""
        widths = sorted(
            {
                float(c)
                for name, k in knobs.items()
                for c in k.choices
                if k.param(c) != self.base.get(name)
            }
        )
        return tuple(
            Point(
                width,
                *self.deployed(
                    {
                        name: k.param(c)
                        for name, k in knobs.items()
                        for c in k.choices
                        if float(c) == width and k.param(c) != self.base.get(name)
                    }
                ),
            )
            for width in widths
        )

    def group(
        self, name: str, levels: list[float], base_ratio: float, *, sparse: bool
    ) -> tuple[Point, ...]:
        """The group's points: damage at every level; latency measured at every level, or
        (``sparse``) at the level nearest half and the most, and interpolated between them and
        the unpruned base at the others (marked ``measured=False``)."""
        timed = set(levels)
        if sparse:
            timed = {min(levels, key=lambda lv: abs(lv - 0.5)), levels[-1]}
        points = [self.pruned(name, level, timed=level in timed) for level in levels]
        known = [(0.0, base_ratio), *((p.value, p.ratio) for p in points if p.measured)]
        xs, ys = zip(*known, strict=True)
        return tuple(
            p if p.measured else replace(p, ratio=float(np.interp(p.value, xs, ys))) for p in points
        )

    def pruned(self, name: str, level: float, *, timed: bool = True) -> Point:
        """The group pruned alone: damage in PyTorch (batch norms re-estimated), latency of the
        base plan with it (``timed``; otherwise NaN, for ``group`` to interpolate)."""
        self.progress(f"{name} at {level:g}")
        plan = self.plan({name: level})
        pruner = ChannelPruner(self.experiment.example_input, seed=self.experiment.seed)
        model, _ = pruner.apply(self.teacher, plan)
        check_output_shape(model, self.teacher, self.experiment.task)
        _reestimate_batchnorm(model, self.x)
        with torch.no_grad():
            damage = self._damage(call(model, to_torch(self.x)).numpy())
        if not timed:
            return Point(level, damage, math.nan, measured=False)
        return Point(level, damage, self.probe(plan) / self.probe.reference_ms)

    def _damage(self, outputs: np.ndarray) -> float:
        """The task's divergence of ``outputs`` from the teacher's (non-finite: infinite)."""
        value = float(self.experiment.task.divergence(self.teacher_outputs.numpy(), outputs))
        return value if np.isfinite(value) else float("inf")  # a model that outputs NaN

    def deployed(self, changes: dict[str, Any]) -> tuple[float, float]:
        """Damage and latency ratio of the base plan with ``changes``, as deployed (ONNX, in
        its precisions), untrained."""
        self.progress(", ".join(f"{k}={v}" for k, v in changes.items()) or "base")
        plan = self.plan(changes)
        untrained = Plan({**plan.to_dict(), "finetune.epochs": 0})
        target = self.experiment.target
        with tempfile.TemporaryDirectory() as tmp:
            candidate = compress(self.experiment, untrained, Path(tmp), gate=self.probe.gate.work)
            # its latency from this file: a second build only for it cost as much again (a
            # build is 5-10 s on a 22M-parameter transformer)
            ratio = self.probe.built(plan, candidate.onnx_path) / self.probe.reference_ms
            try:  # in the target's runtime, as a trial is scored
                outputs = onnx_outputs(
                    candidate.onnx_path,
                    self.experiment.inputs.named(self.x),
                    threads=target.threads,
                    runtime=target.runtime,
                )
            except InvalidPlan:  # outputs NaN or inf
                return float("inf"), ratio
        return self._damage(outputs), ratio


def _reestimate_batchnorm(model: nn.Module, x: Any, batch: int = 64) -> None:
    """Batch-norm running statistics recomputed on ``x`` (a structural change made the stored
    ones stale); nothing else changes."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
        m.train()
    with torch.no_grad():
        for start in range(0, rows(x), batch):
            call(model, to_torch(take(x, start, start + batch)))
    for m, momentum in saved.items():
        m.momentum = momentum
    model.eval()
