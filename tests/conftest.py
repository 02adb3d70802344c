from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).parent
TINY = f"{TESTS / 'tiny_experiment.py'}:experiment"
BUCKET = "edge-artifacts"


def search_command(storage: str, trials: int) -> list[str]:
    """The CLI search of the tiny experiment, for a test to run as a process of its own."""
    import sys

    return [sys.executable, "-m", "edgecompress.cli", "search", TINY, "--speedup", "0.5"] + [
        "--trials",
        str(trials),
        "--strategy",
        "tpe",
        "--storage",
        storage,
        "--no-progress",
    ]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Model caches and the CPU gate's lock files live in a per-session folder."""
    base = tmp_path_factory.mktemp("cache")
    os.environ["EDGECOMPRESS_CACHE"] = str(base)
    os.environ["EDGECOMPRESS_GATE_DIR"] = str(base)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # a third of every latency measurement's rounds: the tests assert behaviour, never a time
    # (noisier medians; the suite's searches spent most of their time measuring)
    os.environ.setdefault("EDGECOMPRESS_MEASURE_EFFORT", "0.34")


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same random state, whatever ran before it."""
    torch.manual_seed(0)


@pytest.fixture
def tiny():  # type: ignore[no-untyped-def]
    from edgecompress import load_experiment

    return load_experiment(TINY)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one thread for the test, restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    from moto.server import ThreadedMotoServer

    for key, value in {
        "AWS_ACCESS_KEY_ID": "test-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    server = ThreadedMotoServer(port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client
    finally:
        server.stop()
