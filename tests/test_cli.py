"""The command line, and the clear errors bad input gets before any trial runs."""

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from edgecompress.cli import EXIT_BAD_INPUT, EXIT_INFEASIBLE, main

from .conftest import TINY  # type: ignore[import-not-found]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("command", "option"),
    [
        ("search", "--storage"),
        ("front", "--storage"),
        ("export", "--storage"),
        ("plot", "--output"),
        ("space", "json"),
    ],
)
def test_every_subcommand_has_help(
    command: str, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert option in capsys.readouterr().out


def test_experiment_path_errors(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(
        capsys, "search", "missing.py:experiment", "--speedup", "2", "--trials", "2"
    )
    assert code == EXIT_BAD_INPUT and "no file" in err
    (workdir / "broken.py").write_text("import nonexistent_module_xyz\n")
    code, _, err = _run(capsys, "search", "broken.py:experiment", "--speedup", "2", "--trials", "2")
    assert code == EXIT_BAD_INPUT and "nonexistent_module_xyz" in err and "importing" in err
    (workdir / "other.py").write_text(
        f"import runpy\nfrom edgecompress import Experiment\n"
        f"exp = runpy.run_path({TINY.split(':')[0]!r})['experiment']\n"
    )
    code, _, err = _run(capsys, "search", "other.py:experiment", "--speedup", "2", "--trials", "2")
    assert code == EXIT_BAD_INPUT and "defines no 'experiment'" in err and "exp" in err
    code, _, err = _run(capsys, "search", "other.py", "--speedup", "2", "--trials", "2")
    assert code == EXIT_BAD_INPUT and "FILE.py:NAME or package.module:NAME" in err
    # the module form: a module that does not exist, one that does but names no experiment
    for ref, said in (
        ("edgecompress.examples.nope:experiment", "no module named 'edgecompress.examples.nope'"),
        ("edgecompress.examples.mnist1d:nothing", "edgecompress.examples.mnist1d defines no"),
        ("not-a module:experiment", "expected FILE.py:NAME or package.module:NAME"),
    ):
        code, _, err = _run(capsys, "search", ref, "--speedup", "2", "--trials", "2")
        assert code == EXIT_BAD_INPUT and said in err, err
    assert not list(workdir.glob("*.db"))  # nothing was created


def test_the_examples_load_by_module_and_by_their_files_in_a_clone() -> None:
    from edgecompress import load_experiment

    for name in ("mnist1d", "mnist1d_mlp"):
        shipped = load_experiment(f"edgecompress.examples.{name}:experiment")
        assert shipped.ref == f"edgecompress.examples.{name}:experiment"  # as workers import it
        clone = load_experiment(f"{Path(__file__).parent.parent}/examples/{name}.py:experiment")
        assert clone.name == shipped.name and clone.model is shipped.model


def test_a_rejected_input_shape(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "shape.py").write_text(
        f"import runpy, torch\nfrom dataclasses import replace\n"
        f"base = runpy.run_path({TINY.split(':')[0]!r})['experiment']\n"
        "experiment = replace(base, example_input=torch.zeros(1, 3, 7))\n"
    )
    code, _, err = _run(capsys, "search", "shape.py:experiment", "--speedup", "2", "--trials", "2")
    assert code == EXIT_BAD_INPUT
    assert "rejects the example input (float32 (1, 3, 7))" in err


def test_storage_and_study_errors(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "front", "--storage", "sqlite:///nothing.db")
    assert code == EXIT_BAD_INPUT and "no such file" in err
    assert not (workdir / "nothing.db").exists()
    (workdir / "junk.db").write_bytes(b"this is not a database" * 10)
    code, _, err = _run(capsys, "front", "--study", "x", "--storage", "sqlite:///junk.db")
    assert code == EXIT_BAD_INPUT and "not an SQLite database" in err
    assert (workdir / "junk.db").read_bytes() == b"this is not a database" * 10  # untouched
    code, _, err = _run(
        capsys, "search", TINY, "--speedup", "2", "--trials", "2", "--storage", "nosuchdriver://x/y"
    )
    assert code == EXIT_BAD_INPUT and "cannot be opened" in err
    # a storage password is never shown, whichever command names the storage
    secret = "postgresql://alice:s3cr3tPW@127.0.0.1:1/db"
    for argv in (
        ("front", "--storage", secret),
        ("search", TINY, "--speedup", "2", "--trials", "2", "--storage", secret),
    ):
        code, out, err = _run(capsys, *argv)
        assert code == EXIT_BAD_INPUT and "cannot be opened" in err
        assert "s3cr3tPW" not in out + err and "postgresql://alice:***@127.0.0.1:1/db" in err
    sqlite3.connect(workdir / "empty.db").close()
    code, _, err = _run(capsys, "front", "--study", "ghost", "--storage", "sqlite:///empty.db")
    assert code == EXIT_BAD_INPUT and "no study named 'ghost'" in err


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400)]
)
def test_timeout_reads_a_duration(text: str, seconds: float) -> None:
    from edgecompress.cli import _parser

    args = _parser().parse_args(["search", TINY, "--trials", "2", "--timeout", text])
    assert args.timeout == seconds


@pytest.mark.parametrize("text", ["0", "0s", "-5m", "2 hours", "h", "nan", ""])
def test_timeout_refuses_what_is_not_a_duration(
    text: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["search", TINY, "--speedup", "2", "--trials", "2", f"--timeout={text}"])
    assert exit_.value.code == 2
    assert "not a positive duration: write it as 90s, 30m, 2h or 1h30m" in capsys.readouterr().err
    assert not list(workdir.iterdir())  # nothing was created


def test_budget_arguments_and_unreachable_budget(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "search", TINY, "--trials", "2", "--storage", "sqlite:///b.db")
    assert code == EXIT_BAD_INPUT and "--budget-ms" in err and "--speedup" in err
    code, _, err = _run(
        capsys,
        "search",
        TINY,
        "--budget-ms",
        "0.00001",
        "--trials",
        "2",
        "--storage",
        "sqlite:///b.db",
    )
    assert code == EXIT_BAD_INPUT
    assert "below what the search space can reach" in err and "most compressed plan measures" in err
    assert not (workdir / "b.db").exists()  # the refused search left no storage file behind
    code, _, err = _run(capsys, "front", "--study", "tiny", "--storage", "sqlite:///b.db")
    assert code == EXIT_BAD_INPUT and "no such file" in err
    # numbers that are not budgets: refused before any work (a NaN budget made a study that
    # could never complete nor be resumed)
    for flag, value in (("--budget-ms", "nan"), ("--budget-ms", "inf"), ("--speedup", "nan")):
        code, _, err = _run(
            capsys, "search", TINY, flag, value, "--trials", "2", "--storage", "sqlite:///b.db"
        )
        assert code == EXIT_BAD_INPUT and f"{flag} must be a finite number > 0" in err
        assert not (workdir / "b.db").exists()


def test_search_front_export_and_the_infeasible_case(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = "sqlite:///cli.db"
    code, out, _ = _run(
        capsys,
        "search",
        TINY,
        "--speedup",
        "0.5",
        "--trials",
        "3",
        "--strategy",
        "tpe",
        "--storage",
        db,
        "--no-progress",
        "--format",
        "json",
    )
    assert code == 0
    front = json.loads(out)
    assert front and {"trial", "accuracy", "latency_ms", "size_mb", "feasible", "plan"} <= set(
        front[0]
    )
    code, out, _ = _run(capsys, "front", "--study", "tiny", "--storage", db)
    assert code == 0 and "budget" in out and "meets" in out
    code, out, _ = _run(capsys, "front", "--storage", db, "--format", "csv")
    assert code == 0 and out.splitlines()[0].startswith("trial,accuracy")
    code, out, _ = _run(
        capsys, "export", "--storage", db, "--best", "-o", "out/best.onnx", "--format", "onnx,ort"
    )
    assert code == 0 and (workdir / "out" / "best.onnx").exists()
    manifest = json.loads((workdir / "out" / "best.json").read_text())
    # the ONNX Runtime Mobile file beside it: loads, verified, re-measured, described
    ort = manifest["formats"]["ort"]
    assert ort["file"] == "best.ort" and ort["metric_verified"] is True
    assert ort["latency_ms_remeasured"] > 0 and "best.ort" in out
    from edgecompress import load_experiment
    from edgecompress.evaluators import onnx_accuracy

    x, y = load_experiment(TINY).task.arrays("val")
    assert onnx_accuracy(workdir / "out" / "best.ort", x, y) == manifest["metrics"]["accuracy"]
    assert manifest["formats"]["onnx"]["file"] == "best.onnx"
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--storage", db, "--best", "-o", "o.onnx", "--format", "onnx,tflite"])
    refused = capsys.readouterr().err
    assert exit_.value.code == 2 and "write the formats as onnx or onnx,ort" in refused
    assert not (workdir / "o.onnx").exists()
    assert f"{manifest['metrics']['speedup']:.1f}x the uncompressed model" in out
    assert manifest["trial"] == front[0]["trial"] and manifest["feasible"]
    # the recipe that made the deployed file travels with it
    recipe = manifest["quantization"]
    assert recipe == front[0]["notes"]["quantization"] and "precisions" in recipe
    assert recipe["weights"].startswith("per-channel symmetric") and recipe["rounding"] in (
        "nearest",
        "stochastic",
    )
    # the picture of the study, the exported trial highlighted
    code, out, _ = _run(capsys, "plot", "--storage", db, "-o", "out/front.png")
    assert code == 0 and f"trial {manifest['trial']} highlighted" in out
    assert (workdir / "out" / "front.png").read_bytes()[:4] == b"\x89PNG"
    code, _, err = _run(capsys, "plot", "--storage", db, "-o", "front.gif")
    assert code == EXIT_BAD_INPUT and "is written as .png, .svg, .pdf, .html" in err
    code, _, err = _run(capsys, "export", "--storage", db, "--trial", "99", "-o", "x.onnx")
    assert code == EXIT_BAD_INPUT and "no completed trial 99" in err
    # an -o under a path whose parent is a file: a clear error before any work, nothing touched
    (workdir / "afile").write_text("mine")
    code, _, err = _run(capsys, "export", "--storage", db, "--best", "-o", "afile/m.onnx")
    assert code == EXIT_BAD_INPUT and "is a file, not a folder" in err
    assert (workdir / "afile").read_text() == "mine"

    # a copy of the study under a budget nothing meets: distinct exit code, export --best refuses
    shutil.copy(workdir / "cli.db", workdir / "tight.db")
    import optuna

    from edgecompress.search.meta import update

    update(optuna.load_study(study_name="tiny", storage="sqlite:///tight.db"), budget_ms=1e-6)
    code, out, err = _run(capsys, "front", "--storage", "sqlite:///tight.db")
    assert code == EXIT_INFEASIBLE and "NO trial meets the budget" in out
    code, _, err = _run(
        capsys, "export", "--storage", "sqlite:///tight.db", "--best", "-o", "y.onnx"
    )
    assert code == EXIT_INFEASIBLE and "no trial within the budget" in err
    assert not (workdir / "y.onnx").exists()
    # a trial over the budget, asked for by number: exported, and said so
    code, out, _ = _run(
        capsys, "export", "--storage", "sqlite:///tight.db", "--trial", "0", "-o", "z.onnx"
    )
    assert code == 0 and "this trial is OVER the budget by" in out
    assert json.loads((workdir / "z.json").read_text())["feasible"] is False


def test_space_shows_every_knob_and_every_layer_left_alone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _run(capsys, "space", TINY, "--format", "json")
    assert code == 0
    entries = json.loads(out)
    knobs = {e["name"]: e for e in entries if e["kind"] != "skipped"}
    assert knobs["prune.conv1"]["low"] == 0.0 and knobs["prune.conv1"]["step"] == 0.05
    assert knobs["prune.conv1"]["layers"] == ["conv1", "bn1"]  # bn1 is pruned with conv1
    assert knobs["method.prune_criterion"]["kind"] == "choice"
    assert "taylor" in knobs["method.prune_criterion"]["choices"]
    assert knobs["rank.conv2"]["high"] == 1.0 and knobs["bits.fc"]["choices"] == [4, 8, 16, 32]
    alone = {(e["name"], e["technique"]): e["reason"] for e in entries if e["kind"] == "skipped"}
    assert "output" in alone[("fc", "prune")] and "first layer" in alone[("conv1", "rank")]

    code, out, _ = _run(capsys, "space", TINY)
    assert code == 0
    assert "prune.conv1" in out and "0.0 .. 0.95 step 0.05" in out and "left alone" in out
    assert "taylor" in out


def test_space_of_a_bad_experiment_is_a_clear_error(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "space", "missing.py:experiment")
    assert code == EXIT_BAD_INPUT and "no file" in err
