"""How the command line prints a front: a table, CSV or JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

import pandas as pd

from edgecompress.search import Result
from edgecompress.tasks.metrics import shown

EXIT_INFEASIBLE = 3


def plan_summary(plan: dict[str, Any], notes: dict[str, Any]) -> str:
    def values(section: str) -> list[float]:
        return [float(v) for k, v in plan.items() if k.startswith(section + ".")]

    parts = []
    if notes.get("student") == "family":
        parts.append(f"student w{plan.get('student.width')} d{plan.get('student.depth')}")
    elif notes.get("student") == "derived":
        depth = [str(v) for k, v in plan.items() if k.startswith("student.depth.")]
        width = [f"{float(v):g}" for k, v in plan.items() if k.startswith("student.width.")]
        parts.append(f"student depth {'/'.join(depth) or '-'} width {'/'.join(width) or '-'}")
    ratios = values("prune")
    if any(ratios):
        parts.append(f"prune mean {sum(ratios) / len(ratios):.2f}")
    sparse = sum(v > 0 for v in values("sparsity"))
    if sparse:
        parts.append(f"sparse {sparse} ({plan.get('method.sparsity', 'magnitude')})")
    factorized = sum(v < 1 for v in values("rank"))
    if factorized:
        parts.append(f"low-rank {factorized}")
    parts += _precision_summary(plan, [int(b) for b in values("bits")])
    return ", ".join(parts) or "uncompressed"


def _precision_summary(plan: dict[str, Any], bits: list[int]) -> list[str]:
    names = {4: "int4", 8: "int8", 16: "fp16"}
    counts = {b: bits.count(b) for b in sorted(set(bits)) if b != 32}
    if not counts:
        return []
    method = plan.get("method.quant", "static")
    shown = " ".join(f"{names.get(b, f'{b}-bit')} {n}" for b, n in counts.items())
    return [f"{shown} of {len(bits)}" + (f" ({method})" if 8 in counts else "")]


def print_front(result: Result, fmt: str) -> int:
    frame = result.front()
    records = result.records(frame)
    if fmt == "json":
        print(json.dumps(records, indent=2, allow_nan=False))
    elif fmt == "csv":
        flat = pd.DataFrame(records)
        if len(flat):
            for column in ("plan", "notes"):
                flat[column] = flat[column].map(lambda p: json.dumps(p, sort_keys=True))
        print(flat.to_csv(index=False), end="")
    else:
        print(_table(result, records))
    if not result.has_feasible:
        print(
            f"edgecompress: no trial meets the budget of {result.budget_ms:.4f} ms; shown are "
            "the closest trials.",
            file=sys.stderr,
        )
        return EXIT_INFEASIBLE
    return 0


def _table(result: Result, records: list[dict[str, Any]]) -> str:
    m = result.meta
    head = (
        f"study {result.study_name}: {len(result.trials)} complete, {result.failed} failed | "
        f"budget {m.budget_ms:.4f} ms | uncompressed {m.reference_latency_ms:.4f} ms | "
        f"target {m.target['name']} ({m.threads} thread, "
        f"batch {m.target['batch_size']}) on {m.device['cpu_model']}"
    )
    if m.recosted_for:
        head += (
            f"\nre-costed for target {m.recosted_for}: latency and feasibility from its table;"
            f" {result.metric} and size as trained"
        )
    if result.max_drop is not None:
        head += (
            f"\nquestion: the fastest model within {result.max_drop:g} of the teacher's "
            f"{result.metric}"
        )
    s = result.screening
    if s:
        head += (
            f"\nscreening: {int(s['screened'])} plans known over the budget were not trained"
            f" (screening took {s['screen_s']:.0f} s; about {s['saved_s'] / 60:.1f} min of "
            "training saved)"
        )
    r = m.residuals
    if r:
        head += (
            f"\nfront re-measured live: measured / table-predicted, median "
            f"{r['median_residual']:.3f} over {len(r['trials'])} trials"
        )
    title = (
        "Pareto front within the budget"
        if result.has_feasible
        else "NO trial meets the budget; the closest trials"
    )
    name = result.metric
    rows = [
        {
            "trial": r["trial"],
            name: shown(r[name], name) + _se(r.get(f"{name}_se")),
            f"test_{name}": "-" if r[f"test_{name}"] is None else shown(r[f"test_{name}"], name),
            "latency_ms": f"{r['latency_ms']:.4f}",
            "speedup": f"{r['speedup']:.1f}x",
            "size_mb": f"{r['size_mb']:.3f}",
            "gz_mb": "-" if r["size_gz_mb"] is None else f"{r['size_gz_mb']:.3f}",
            "budget": "meets" if r["feasible"] else f"over +{r['violation_ms']:.4f}",
            "plan": r["baseline"]
            or _proposed(r.get("proposed_by")) + plan_summary(r["plan"], r.get("notes") or {}),
        }
        for r in records
    ]
    body = pd.DataFrame(rows).to_string(index=False) if rows else "(no completed trials)"
    return f"{head}\n{title}:\n{body}"


def _se(value: float | None) -> str:
    return "" if value is None else f" +-{value:.4f}"


def _proposed(label: str | None) -> str:
    return f"{label}: " if label else ""
