"""Measures a bundle of ONNX micro-models on the device it runs on; needs only onnxruntime and
numpy, so it is copied as ``run.py`` into every bundle and runs on a Raspberry Pi, a phone's
Python or a Jetson as well as here (``table build`` runs the same code in-process).

    python run.py -o device.csv [--threads N] [--time-limit S]

A bundle holds ``manifest.csv`` (one row per micro-model: ``id``, ``file``, ``null_file`` and the
configuration's columns), ``bundle.json``, ``reference.onnx`` and ``overhead.onnx``. Every
micro-model is timed against the fixed reference in interleaved rounds, beside its *null* model
(the same inputs and outputs, no node): its entry is the difference, so the per-call overhead
and the copy of inputs and outputs are left out of the layer. Milliseconds are the median ratio
to the reference times the reference's own time on this device. A measurement whose spread is
above 15% is repeated with three times the rounds; if it stays noisy its status says so.

It runs on Python 3.8 and later. Rows are appended to the output as they are measured: an
interrupted run (Ctrl-C, the time limit) resumes where it stopped when run again with the same
output file; a kernel that failed is tried again; another bundle's output file is refused.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import operator
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

TIMING = ("latency_ms", "p90_ms", "spread_pct", "status", "alone_ms")
# a whole model's row carries its kernels' keys (JSON): more than csv's default field limit
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def session(model: str | bytes, threads: int, *, optimize: bool = False) -> ort.InferenceSession:
    """Micro-models are already in the form the runtime runs (``optimize=False``)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def random_feed(sess: ort.InferenceSession, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of the session's declared types and (static) shapes."""
    rng = np.random.default_rng(seed)
    feed = {}
    for arg in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in arg.shape]
        dtype = _DTYPES.get(arg.type)
        if dtype is None:
            raise ValueError(f"input {arg.name}: type {arg.type} is not supported by the runner")
        if dtype in (np.int32, np.int64):  # token ids or a mask: 0 and 1 index any vocabulary
            value: np.ndarray = rng.integers(0, 1, size=shape, endpoint=True).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            low, high = max(int(info.min), -128), min(int(info.max), 255)
            value = rng.integers(low, high, size=shape, endpoint=True).astype(dtype)
        else:
            value = rng.standard_normal(shape).astype(dtype)
        feed[arg.name] = value
    return feed


class Timed:
    """One model with its feed; ``block_ms`` is the mean time of one call over a block."""

    def __init__(
        self,
        model: str | bytes,
        threads: int,
        feed: dict[str, np.ndarray] | None = None,
        *,
        optimize: bool = False,
    ) -> None:
        self.sess = session(model, threads, optimize=optimize)
        self.feed = feed if feed is not None else random_feed(self.sess)
        self.calls = 1

    def block_ms(self) -> float:
        run, feed = self.sess.run, self.feed
        start = time.perf_counter_ns()
        for _ in range(self.calls):
            run(None, feed)
        return (time.perf_counter_ns() - start) / self.calls / 1e6

    def warm_up(self, seconds: float, block_ms: float, *, min_runs: int = 5) -> None:
        """Runs for ``seconds`` (and at least ``min_runs`` calls), then sizes a block to last
        ``block_ms``."""
        deadline = time.perf_counter() + seconds
        runs, one = 0, self.block_ms()
        while time.perf_counter() < deadline or runs < min_runs:
            one = min(one, self.block_ms())
            runs += 1
        self.calls = max(1, int(block_ms / max(one, 1e-4)))


def stats(ratios: Sequence[float]) -> tuple[float, float, float]:
    """(median, p90, spread %) of per-round ratios; spread is the inter-quartile range."""
    q25, q50, q75, q90 = np.percentile(ratios, [25, 50, 75, 90])
    return float(q50), float(q90), float(100 * (q75 - q25) / max(q50, 1e-12))


def interleaved(
    models: Sequence[Timed],
    reference: Timed,
    *,
    rounds: int,
    warmup_s: float,
    block_ms: float,
    min_runs: int = 5,
) -> list[list[float]]:
    """Per model, the per-round ratios of its block time to the reference's, in rounds that
    time every model once and the reference once, the order rotating from round to round."""
    for timed in (reference, *models):
        timed.warm_up(warmup_s, block_ms, min_runs=min_runs)
    everyone = [reference, *models]
    ratios: list[list[float]] = [[] for _ in models]
    for r in range(rounds):
        shift = r % len(everyone)
        order = everyone[shift:] + everyone[:shift]
        times = {id(t): t.block_ms() for t in order}
        ref = times[id(reference)]
        for i, model in enumerate(models):
            ratios[i].append(times[id(model)] / ref)
    return ratios


class Runner:
    """Measures micro-models against one reference kept open for the whole run."""

    def __init__(
        self,
        reference: str | bytes,
        *,
        threads: int,
        rounds: int = 10,
        warmup_s: float = 0.03,
        block_ms: float = 4.0,
        max_spread_pct: float = 15.0,
    ) -> None:
        self.threads, self.rounds, self.warmup_s = threads, rounds, warmup_s
        self.block_ms, self.max_spread_pct = block_ms, max_spread_pct
        self.reference = Timed(reference, threads, optimize=True)
        self.reference.warm_up(0.5, block_ms)
        self.reference_ms = self.absolute_ms(self.reference)

    def absolute_ms(self, timed: Timed, rounds: int = 30) -> float:
        return float(np.median([timed.block_ms() for _ in range(rounds)]))

    def ratio(self, model: str | bytes, *, optimize: bool = True) -> tuple[float, float, float]:
        """A whole model's median ratio, p90 ratio and spread against the reference."""
        timed = Timed(model, self.threads, optimize=optimize)
        ratios = interleaved(
            [timed],
            self.reference,
            rounds=self.rounds * 3,
            warmup_s=0.2,
            block_ms=self.block_ms * 4,
        )
        return stats(ratios[0])

    def entry(self, micro: str | bytes, null: str | bytes) -> dict[str, Any]:
        """The micro-model's time less its null model's, in ms: latency, p90, spread, status."""
        best: dict[str, Any] = {}
        for attempt in range(2):
            rounds = self.rounds * (1 + 2 * attempt)
            timed = [Timed(micro, self.threads), Timed(null, self.threads)]
            timed[1].feed.update(timed[0].feed)  # the same inputs, and its outputs as inputs
            mic, nul = interleaved(
                timed,
                self.reference,
                rounds=rounds,
                warmup_s=self.warmup_s,
                block_ms=self.block_ms,
            )
            diff = list(map(operator.sub, mic, nul))
            med, p90, _ = stats(diff)
            q25, q75 = np.percentile(diff, [25, 75])
            alone, _, spread_m = stats(mic)
            ms = max(med, 0.0) * self.reference_ms
            row = {
                "latency_ms": ms,
                "p90_ms": max(p90, med, 0.0) * self.reference_ms,
                # the spread of the difference itself (inter-quartile range, % of the entry)
                "spread_pct": min(100 * (q75 - q25) / med, 1000.0) if med > 0 else 0.0,
                # a measurement is noisy when the micro-model's own rounds disagree
                "status": "ok" if spread_m <= self.max_spread_pct else "noisy",
                # the micro-model alone, call overhead included: what a naive sum would add
                "alone_ms": alone * self.reference_ms,
            }
            row["_quality"] = spread_m
            if not best or row["_quality"] < best["_quality"]:
                best = row
            if best["status"] == "ok":
                break
        best.pop("_quality")
        return best


def cpu_info() -> tuple[str, list[str]]:
    """The CPU model and every feature flag the kernel reports (x86 ``flags``, ARM
    ``Features``)."""
    model = platform.processor() or platform.machine()
    flags: list[str] = []  # a local annotation: never evaluated, so Python 3.8 runs it too
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware", "cpu model") and value.strip():
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = sorted(value.split())
    return model, flags


def describe_here() -> dict[str, Any]:
    """The device description, from what any Python has (no edgecompress here)."""
    model, flags = cpu_info()
    return {
        "cpu_model": model,
        "isa_flags": flags,
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "system": platform.system(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
    }


def read_manifest(bundle: Path) -> list[dict[str, str]]:
    with open(bundle / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _written(out: Path) -> dict[str, dict[str, str]]:
    """Rows written so far, by id (the last one of an id: a failed row is tried again)."""
    if not out.exists() or out.stat().st_size == 0:
        return {}
    with open(out, newline="") as f:
        return {row["id"]: row for row in csv.DictReader(f)}


def _done(out: Path) -> dict[str, dict[str, str]]:
    """Rows measured so far; a row that failed is measured again on the next run."""
    return {
        i: row for i, row in _written(out).items() if not row.get("status", "").startswith("failed")
    }


def _failure(exc: Exception) -> str:
    """A row's status when the device could not run its model."""
    return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def _check_bundle(out: Path, bundle_id: str) -> None:
    """An output file belongs to one bundle: resuming with another one is refused."""
    meta = out.with_suffix(".json")
    if out.exists() and out.stat().st_size > 0 and meta.exists():
        wrote = json.loads(meta.read_text()).get("bundle_id")
        if wrote != bundle_id:
            raise SystemExit(
                f"{out} holds measurements of another bundle ({wrote}, not {bundle_id}); "
                "write to another file (-o), or remove it to start again."
            )


def run_bundle(
    bundle: Path,
    out: Path,
    *,
    threads: int | None = None,
    time_limit_s: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Measures every micro-model of ``bundle`` not yet in ``out`` (appending rows), then writes
    the header ``out`` with ``.json``. Returns the header; ``complete`` says whether every row
    is measured (False after the time limit: run again to go on)."""
    meta = json.loads((bundle / "bundle.json").read_text())
    threads = threads or int(meta["threads"])
    manifest = read_manifest(bundle)
    bundle_id = str(meta.get("bundle_id", ""))
    _check_bundle(out, bundle_id)
    done = _done(out)
    if not done or not out.with_suffix(".json").exists():
        stamp = {"bundle_id": bundle_id, "complete": False}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(stamp) + "\n")
    runner = Runner(str(bundle / "reference.onnx"), threads=threads)
    fields = list(manifest[0].keys()) + list(TIMING) if manifest else ["id", *TIMING]
    deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
    new = not out.exists() or out.stat().st_size == 0
    complete = True
    with open(out, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        for i, row in enumerate(manifest):
            if progress:
                progress(i, len(manifest))
            if row["id"] in done:
                continue
            if deadline is not None and time.monotonic() > deadline:
                complete = False
                break
            try:
                timing = runner.entry(str(bundle / row["file"]), str(bundle / row["null_file"]))
            except Exception as exc:  # noqa: BLE001 - a kernel this runtime lacks is reported
                timing = dict({k: "" for k in TIMING}, status=_failure(exc))
            writer.writerow({**row, **timing})
            f.flush()
    if complete and (bundle / "whole.csv").exists():
        complete = _run_whole(bundle, out, runner, deadline, progress, len(manifest))
    overhead = Timed(str(bundle / "overhead.onnx"), threads)
    ratios = interleaved([overhead], runner.reference, rounds=30, warmup_s=0.2, block_ms=8.0)
    header = {
        "device": describe_here(),
        "threads": threads,
        "batch_size": int(meta["batch_size"]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "reference_ms": runner.reference_ms,
        # one call with the model's own inputs and outputs and no work: the fixed cost of a call
        "overhead_ms": stats(ratios[0])[0] * runner.reference_ms,
        "bundle": meta.get("name", ""),
        "bundle_id": bundle_id,
        # every row tried (a kernel this device cannot run stays "failed: ...")
        "complete": complete and len(_written(out)) >= len(manifest),
    }
    out.with_suffix(".json").write_text(json.dumps(header, indent=2, sort_keys=True) + "\n")
    return header


def whole_output(out: Path) -> Path:
    """Where the whole models' times go, beside ``out``."""
    return out.with_name(out.stem + "-whole.csv")


def _run_whole(
    bundle: Path,
    out: Path,
    runner: Runner,
    deadline: float | None,
    progress: Callable[[int, int], None] | None,
    done_before: int,
) -> bool:
    """Times each whole model of the bundle (as a model runs: optimized); resumable, and a
    model that failed is tried again. Its row keeps the bundle's columns (the kernels' keys)
    but the file."""
    with open(bundle / "whole.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    path = whole_output(out)
    done = _done(path)
    new = not path.exists() or path.stat().st_size == 0
    columns = [c for c in (rows[0] if rows else {}) if c != "file"]
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*columns, "latency_ms", "spread_pct", "status"])
        if new:
            writer.writeheader()
        for i, row in enumerate(rows):
            if progress:
                progress(done_before + i, done_before + len(rows))
            if row["id"] in done:
                continue
            if deadline is not None and time.monotonic() > deadline:
                return False
            kept = {c: row[c] for c in columns}
            try:
                ratio, _, spread = runner.ratio(str(bundle / row["file"]))
            except Exception as exc:  # noqa: BLE001 - reported, and left out of the calibration
                failed = {"latency_ms": "", "spread_pct": "", "status": _failure(exc)}
                writer.writerow({**kept, **failed})
                f.flush()
                continue
            ms = ratio * runner.reference_ms
            writer.writerow({**kept, "latency_ms": ms, "spread_pct": spread, "status": "ok"})
            f.flush()
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, required=True, help="device.csv to write")
    parser.add_argument("--bundle", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--threads", type=int, default=None, help="default: the bundle's")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds; resumable")
    args = parser.parse_args(argv)
    total = len(read_manifest(args.bundle))

    def show(i: int, n: int) -> None:
        if i % 10 == 0 or i == n - 1:
            print(f"\r{i + 1}/{n} models", end="", file=sys.stderr, flush=True)

    header = run_bundle(
        args.bundle,
        args.output,
        threads=args.threads,
        time_limit_s=args.time_limit,
        progress=show,
    )
    print(file=sys.stderr)
    state = "complete" if header["complete"] else "partial: run the same command again to go on"
    print(f"{total} micro-models -> {args.output} ({state})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
