"""The picture of a study: what it shows (the elements both renderers draw), and the files."""

from dataclasses import replace
from pathlib import Path

import pytest

from edgecompress.errors import EdgeCompressError
from edgecompress.search import Result
from edgecompress.search.plot import elements, figure_html, figure_matplotlib

from .test_front import _result as _made  # type: ignore[import-not-found]

ROWS = [  # trial, accuracy, latency, baseline, proposed_by
    (0, 0.99, 2.0, "teacher", ""),
    (1, 0.985, 0.6, "int8", ""),
    (2, 0.98, 0.3, "", "uniform at budget"),
    (3, 0.985, 0.28, "", "allocation at budget"),
    (4, 0.98, 0.15, "", "allocation at 0.5 x budget"),
    (5, 0.95, 0.14, "", "uniform at 0.5 x budget"),
    (6, 0.99, 0.5, "", "refinement 1"),  # over the 0.32 ms budget
]


def _result(max_drop: float | None = None) -> Result:
    result = _made([(n, acc, lat) for n, acc, lat, _, _ in ROWS], budget_ms=0.32)
    result.trials["baseline"] = [baseline for *_, baseline, _ in ROWS]
    result.trials["proposed_by"] = [proposed for *_, proposed in ROWS]
    return replace(result, meta=replace(result.meta, max_drop=max_drop))


def _names(drawn) -> dict[str, list[int]]:  # type: ignore[no-untyped-def]
    return {s.name: list(s.trials) for s in drawn.series}


def test_the_picture_marks_baselines_uniform_plans_the_front_budget_and_choice() -> None:
    drawn = elements(_result())
    assert _names(drawn) == {
        "searched plan": [3, 4],
        "uniform plan (one ratio)": [2, 5],
        "over the budget": [6],
        "baseline: teacher": [0],  # marked as such, over the budget or not
        "baseline: int8": [1],
    }
    assert drawn.budget_ms == 0.32 and drawn.drop_line is None
    assert list(drawn.front.trials) == [5, 4, 3]  # fastest first; 2 is dominated
    assert drawn.highlight is not None and list(drawn.highlight.trials) == [3]  # the best
    assert "#3 allocation at budget: accuracy 0.9850" in drawn.highlight.labels[0]
    assert "(7.1x)" in drawn.highlight.labels[0]  # its speedup over the teacher
    # the fastest within a point asked: that trial is the one export --best picks
    asked = elements(_result(max_drop=0.01))
    assert asked.drop_line == pytest.approx(0.98)
    assert asked.highlight is not None and list(asked.highlight.trials) == [4]
    chosen = elements(_result(), trial=5)
    assert chosen.highlight is not None and chosen.highlight.name == "trial 5"


def test_both_renderers_draw_every_element() -> None:
    drawn = elements(_result(max_drop=0.01))
    axes = figure_matplotlib(drawn).axes[0]
    labels = [h.get_label() for h in axes.get_legend().legend_handles]
    assert labels[:1] == ["Pareto front"] and "budget" in labels and "teacher - max drop" in labels
    for name in (*_names(drawn), "export --best picks"):
        assert name in labels
    assert axes.get_xscale() == "log"
    budget = [line for line in axes.lines if line.get_label() == "budget"][0]
    assert budget.get_xdata()[0] == 0.32
    html = figure_html(drawn)
    traces = {t.name: list(t.x) for t in html.data}
    assert traces["Pareto front"] == [0.14, 0.15, 0.28]
    assert traces["uniform plan (one ratio)"] == [0.3, 0.14]
    assert traces["export --best picks"] == [0.15]
    assert html.layout.xaxis.type == "log" and html.layout.meta["budget_ms"] == 0.32


def test_plot_writes_png_and_html_and_refuses_what_it_cannot(tmp_path: Path) -> None:
    result = _result()
    png = result.plot(tmp_path / "front.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    page = result.plot(tmp_path / "front.html").read_text()
    assert "plotly" in page and "allocation at budget" in page and "Pareto front" in page
    with pytest.raises(EdgeCompressError, match=r"\.png, \.svg, \.pdf, \.html"):
        result.plot(tmp_path / "front.jpeg")
    with pytest.raises(EdgeCompressError, match="does not exist"):
        result.plot(tmp_path / "missing" / "front.png")
    with pytest.raises(EdgeCompressError, match="trial 42 is not a complete trial"):
        result.plot(tmp_path / "front.png", trial=42)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["front.html", "front.png"]
