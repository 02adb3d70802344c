"""A study's front as a picture: its metric against latency (log scale), every trial, the
Pareto front, the budget line, the baselines and uniform plans marked, the chosen trial
highlighted. PNG, SVG or PDF through matplotlib; interactive HTML (hover, zoom) through plotly.

``elements`` decides what is drawn; both renderers draw exactly its series, so a test of the
elements is a test of either picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from edgecompress.errors import EdgeCompressError
from edgecompress.search.front import Result
from edgecompress.tasks.metrics import shown

FORMATS = (".png", ".svg", ".pdf", ".html")
BASELINES = ("teacher", "int8")


@dataclass(frozen=True)
class Series:
    """One group of points: ``name`` (the legend), and per point its trial, latency, value of
    the study's metric and hover text."""

    name: str
    trials: tuple[int, ...]
    latency_ms: tuple[float, ...]
    value: tuple[float, ...]
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Elements:
    """What the picture shows: the point series (drawn in order), the front (a line through
    its points, fastest first), the budget (a vertical line), the metric's line of the study's
    ``max_drop`` (None where it asks none), the highlighted trial (None where none is
    feasible), the title and the metric's axis label."""

    series: tuple[Series, ...]
    front: Series
    budget_ms: float
    drop_line: float | None
    highlight: Series | None
    title: str
    y_label: str = "validation accuracy"


def kind_of(row: pd.Series) -> str:
    """Which series a trial belongs to: the baselines (wherever they lie), the plans over the
    budget, the uniform plans (one ratio for every group: a seed, or a strategy's ``uniform
    at ...``), the search's other plans."""
    baseline, proposed = str(row["baseline"] or ""), str(row["proposed_by"] or "")
    if baseline in BASELINES:
        return f"baseline: {baseline}"
    if not bool(row["feasible"]):
        return "over the budget"
    if baseline.startswith("uniform") or proposed.startswith("uniform"):
        return "uniform plan (one ratio)"
    return "searched plan"


def _series(name: str, frame: pd.DataFrame, reference_ms: float, metric: str) -> Series:
    labels = tuple(
        f"#{int(r['trial'])} {r['proposed_by'] or r['baseline'] or 'sampled'}: {metric} "
        f"{shown(r[metric], metric)}, {r['latency_ms']:.4g} ms "
        f"({reference_ms / r['latency_ms']:.1f}x)"
        for _, r in frame.iterrows()
    )
    return Series(
        name,
        tuple(int(t) for t in frame["trial"]),
        tuple(float(x) for x in frame["latency_ms"]),
        tuple(float(y) for y in frame[metric]),
        labels,
    )


def elements(result: Result, trial: int | None = None) -> Elements:
    """What ``plot`` draws for ``result``; ``trial`` is highlighted (default: the trial
    ``export --best`` picks, the answer to the study's question)."""
    trials = result.trials
    if not len(trials):
        raise EdgeCompressError(
            f"study {result.study_name!r} has no complete trial yet: nothing to plot. Run "
            "`edgecompress search` first (or let the running one finish a trial)."
        )
    reference_ms = result.meta.reference_latency_ms
    kinds = trials.apply(kind_of, axis=1)
    order = ["searched plan", "uniform plan (one ratio)", "over the budget"]
    order += [f"baseline: {b}" for b in BASELINES]
    present = [name for name in order if (kinds == name).any()]
    metric = result.metric
    series = tuple(_series(name, trials[kinds == name], reference_ms, metric) for name in present)
    front = result.front() if result.has_feasible else trials.iloc[:0]
    front = front.sort_values("latency_ms")
    if trial is not None:
        chosen = trials[trials["trial"] == trial]
        if not len(chosen):
            raise EdgeCompressError(
                f"trial {trial} is not a complete trial of study {result.study_name!r}; "
                f"complete: {', '.join(str(t) for t in trials['trial'])}."
            )
        name = f"trial {trial}"
    else:
        best = result.best()
        chosen = trials.iloc[:0] if best is None else trials[trials["trial"] == best["trial"]]
        name = "export --best picks"
    teacher = trials[trials["baseline"] == "teacher"][metric]
    drop = result.max_drop
    sign = 1.0 if result.higher_is_better else -1.0  # an error's line lies above the teacher
    m = result.meta
    title = (
        f"{result.study_name}: {len(trials)} trials on {m.target['name']} "
        f"({m.device['cpu_model']}), budget {result.budget_ms:.4g} ms"
    )
    return Elements(
        series=series,
        front=_series("Pareto front", front, reference_ms, metric),
        budget_ms=result.budget_ms,
        drop_line=float(teacher.iloc[0]) - sign * drop
        if drop is not None and len(teacher)
        else None,
        highlight=_series(name, chosen, reference_ms, metric) if len(chosen) else None,
        title=title,
        y_label=f"validation {metric}" + ("" if result.higher_is_better else " (lower is better)"),
    )


STYLE: dict[str, dict[str, Any]] = {  # marker, colour
    "searched plan": {"marker": "o", "color": "#4c72b0"},
    "uniform plan (one ratio)": {"marker": "D", "color": "#dd8452"},
    "over the budget": {"marker": "x", "color": "#c44e52"},
    "baseline: teacher": {"marker": "s", "color": "#222222"},
    "baseline: int8": {"marker": "^", "color": "#555555"},
}
PLOTLY_MARKERS = {"o": "circle", "D": "diamond", "x": "x", "s": "square", "^": "triangle-up"}


def plot(result: Result, path: str | Path, *, trial: int | None = None) -> Path:
    """Draws ``result``'s trials to ``path``: ``.png``, ``.svg`` or ``.pdf`` (matplotlib), or
    ``.html`` (plotly: hover shows each trial's plan label, metric and latency). Returns
    the path written."""
    out = Path(path)
    if out.suffix.lower() not in FORMATS:
        raise EdgeCompressError(
            f"cannot draw {out.name!r}: the picture is written as {', '.join(FORMATS)} "
            "(by the file's suffix)."
        )
    drawn = elements(result, trial)
    if not out.parent.is_dir():
        raise EdgeCompressError(f"cannot write {out}: the folder {out.parent} does not exist.")
    try:
        if out.suffix.lower() == ".html":
            figure_html(drawn).write_html(str(out), include_plotlyjs=True, full_html=True)
        else:
            figure_matplotlib(drawn).savefig(out, dpi=150, bbox_inches="tight")
    except OSError as exc:
        raise EdgeCompressError(f"cannot write {out}: {exc.strerror or exc}.") from None
    return out


def figure_matplotlib(drawn: Elements) -> Any:
    """The matplotlib figure of ``drawn`` (a Figure of its own: no pyplot state, no display)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    figure = Figure(figsize=(8, 5))
    axes = figure.subplots()
    front = drawn.front
    if front.trials:
        axes.plot(  # a staircase: the best metric reached at each latency or faster
            front.latency_ms,
            front.value,
            drawstyle="steps-post",
            color="#2ca02c",
            lw=1.5,
            label=front.name,
        )
    for s in drawn.series:
        style = STYLE[s.name]
        axes.scatter(s.latency_ms, s.value, s=28, label=s.name, zorder=3, **style)
    if drawn.highlight is not None:
        h = drawn.highlight
        axes.scatter(
            h.latency_ms,
            h.value,
            s=260,
            marker="*",
            facecolor="none",
            edgecolor="#d62728",
            lw=1.5,
            label=h.name,
            zorder=4,
        )
    axes.axvline(drawn.budget_ms, ls="--", color="#c44e52", lw=1, label="budget")
    if drawn.drop_line is not None:
        axes.axhline(drawn.drop_line, ls=":", color="#555555", lw=1, label="teacher - max drop")
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
    axes.tick_params(axis="x", which="minor", labelsize=7)
    axes.set_xlabel("latency (ms, log scale)")
    axes.set_ylabel(drawn.y_label)
    axes.set_title(drawn.title, fontsize=9)
    axes.grid(True, which="both", alpha=0.25)
    axes.legend(fontsize=7, loc="lower right")
    return figure


def _minor_label(value: float, _: Any) -> str:
    """A log axis' minor tick labelled at 2, 3 and 5 of each decade only (all nine crowd)."""
    mantissa = value / 10 ** math.floor(math.log10(value)) if value > 0 else 0.0
    return f"{value:g}" if any(abs(mantissa - m) < 1e-6 for m in (2, 3, 5)) else ""


def figure_html(drawn: Elements) -> Any:
    """The plotly figure of ``drawn``."""
    try:
        import plotly.graph_objects as go
    except ImportError:  # pragma: no cover - a dependency of the package
        raise EdgeCompressError(
            "the HTML picture needs plotly: pip install plotly (or write .png/.svg)."
        ) from None

    figure = go.Figure()
    front = drawn.front
    if front.trials:
        figure.add_trace(
            go.Scatter(
                x=front.latency_ms,
                y=front.value,
                mode="lines",
                name=front.name,
                line={"color": "#2ca02c", "shape": "hv"},
                hoverinfo="skip",
            )
        )
    marked = [
        (s, {"symbol": PLOTLY_MARKERS[STYLE[s.name]["marker"]], "color": STYLE[s.name]["color"]})
        for s in drawn.series
    ]
    if drawn.highlight is not None:
        marked.append((drawn.highlight, {"symbol": "star-open", "size": 18, "color": "#d62728"}))
    for s, marker in marked:
        figure.add_trace(
            go.Scatter(
                x=s.latency_ms,
                y=s.value,
                mode="markers",
                name=s.name,
                text=s.labels,
                hoverinfo="text",
                marker=marker,
            )
        )
    figure.add_vline(x=drawn.budget_ms, line_dash="dash", line_color="#c44e52")
    if drawn.drop_line is not None:
        figure.add_hline(y=drawn.drop_line, line_dash="dot", line_color="#555555")
    figure.update_layout(
        title={"text": drawn.title, "font": {"size": 13}},
        xaxis={"type": "log", "title": "latency (ms, log scale)"},
        yaxis={"title": drawn.y_label},
        template="plotly_white",
        meta={"budget_ms": drawn.budget_ms, "drop_line": drawn.drop_line},
    )
    return figure
