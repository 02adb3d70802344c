"""The README's Python API snippet runs as written."""

import re
from pathlib import Path

import torch
from torch import nn

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet() -> str:
    text = README.read_text()
    match = re.search(r"<!-- api-snippet[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert match, "the README lost its API snippet"
    return match.group(1)


def _make_user_files() -> None:
    """What the snippet's user has: a trained model and data files."""
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 1200), ("val", 400), ("test", 400)):
        x = torch.randn(n, 32, generator=g)
        torch.save((x, x[:, :4].argmax(1)), f"my_{split}.pt")
    x, y = torch.load("my_train.pt")
    model = nn.Sequential(
        nn.Linear(32, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 4)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    torch.save(model.state_dict(), "my_model.pt")


def test_readme_api_snippet_runs(workdir: Path) -> None:
    _make_user_files()
    scope: dict = {}
    exec(compile(_snippet(), "README.md", "exec"), scope)
    result = scope["result"]
    assert len(result.trials) == 4
    assert result.has_feasible
    assert (workdir / "out" / "my_model.onnx").exists()
    assert (workdir / "out" / "my_model.json").exists()
