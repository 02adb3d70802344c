"""The README's Python snippets run as written."""

import re
from pathlib import Path

import torch
from torch import nn

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet(marker: str = "api-snippet") -> str:
    text = README.read_text()
    match = re.search(rf"<!-- {marker}[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert match, f"the README lost its {marker}"
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


def _make_segmentation_files() -> None:
    """What the task snippet's user has: 1-D signals with two labelled segments on a
    background, and a small per-position classifier trained on them."""
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 600), ("val", 200), ("test", 200)):
        labels = torch.zeros(n, 64, dtype=torch.int64)
        starts = torch.randint(0, 48, (n, 2), generator=g)
        for i in range(n):  # a segment of class 1 and one of class 2 on a background of 0
            labels[i, starts[i, 0] : starts[i, 0] + 12] = 1
            labels[i, starts[i, 1] : starts[i, 1] + 8] = 2
        x = labels.float().unsqueeze(1) + 0.6 * torch.randn(n, 1, 64, generator=g)
        torch.save((x, labels), f"seg_{split}.pt")
    x, y = torch.load("seg_train.pt")
    model = nn.Sequential(
        nn.Conv1d(1, 64, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(64, 64, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(64, 3, 1),
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    torch.save(model.state_dict(), "seg_model.pt")


def test_readme_task_snippet_searches_a_segmentation_model(workdir: Path) -> None:
    _make_segmentation_files()
    scope: dict = {}
    exec(compile(_snippet("task-snippet"), "README.md", "exec"), scope)
    result = scope["result"]
    assert result.metric == "miou" and result.objectives == ["miou", "latency_ms"]
    assert len(result.trials) == 3
    teacher = result.trials.set_index("baseline").loc["teacher"]
    assert 0.5 < teacher["miou"] <= 1.0 and 0.5 < teacher["test_miou"] <= 1.0
    study = scope["experiment"]
    # every metric of the task is recorded; the study's first objective is the asked one
    import optuna

    trials = optuna.load_study(study_name=study.name, storage="sqlite:///seg.db").get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert complete and all("pixel_accuracy" in t.user_attrs for t in complete)
    assert all(t.values[0] == t.user_attrs["miou"] for t in complete)
