"""How far fine-tuning recovers a pruned all-MiniLM-L6-v2 (issue 14): the recipe's learning rate
and epochs, measured.

Each plan prunes every head group and feed-forward width of the pretrained MiniLM by the same
ratio (whole heads go; what the search's uniform plan at that ratio does), in fp32. The pruned
model is fine-tuned by the example task's own ``finetune`` (the squared error to the teacher's
embeddings, AdamW, cosine schedule) with each learning rate and number of epochs asked, from the
same pruned weights and seed, and scored on the validation sentences: the mean cosine
similarity of its embeddings to the teacher's (the study's metric). Results go to
``bench/minilm_finetune.json`` (a run replaces the rows of the ratios, rates and epochs it ran).

    .venv/bin/python bench/minilm_finetune.py --ratios 0.25 0.5 --lrs 5e-5 2e-4 5e-4 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from edgecompress.compress import ChannelPruner
from edgecompress.examples.minilm import experiment
from edgecompress.inputs import call, to_torch
from edgecompress.search.engine import checked_reference, space_of
from edgecompress.spaces import baseline_params, on_grid, replay

OUT = Path(__file__).with_name("minilm_finetune.json")


def cosine(model: torch.nn.Module, x: dict[str, np.ndarray], y: np.ndarray) -> float:
    with torch.no_grad():
        rows = len(y)
        out = torch.cat(
            [
                call(model, to_torch({k: v[i : i + 128] for k, v in x.items()}))
                for i in range(0, rows, 128)
            ]
        ).numpy()
    return float(experiment.task.evaluate(out, y)["cosine"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--lrs", type=float, nargs="+", default=[5e-5, 2e-4, 5e-4])
    parser.add_argument("--epochs", type=int, nargs="+", default=[2])
    args = parser.parse_args()

    reference = checked_reference(experiment)
    space = space_of(experiment, reference)
    teacher = experiment.model().eval()
    x, y = experiment.task.arrays("val")
    settings = experiment.task.finetune
    runs: list[dict[str, float]] = []
    results: dict[str, object] = {"teacher": cosine(teacher, x, y), "runs": runs}
    print(f"teacher: val cosine {results['teacher']:.4f}")
    prune = [k for k in space.knobs() if k.section == "prune" and k.kind == "float"]
    for ratio in args.ratios:
        params = {**baseline_params(space, "teacher"), **{k.name: on_grid(k, ratio) for k in prune}}
        plan = replay(space, params)
        pruner = ChannelPruner(experiment.example_input, seed=experiment.seed)
        untrained, _ = pruner.apply(experiment.model().eval(), plan)
        size = sum(p.numel() for p in untrained.parameters())
        start = cosine(untrained, x, y)
        print(f"ratio {ratio}: {size / 1e6:.1f}M parameters, untrained val cosine {start:.4f}")
        for epochs in args.epochs:
            for lr in args.lrs:
                student, _ = pruner.apply(experiment.model().eval(), plan)
                began = time.perf_counter()
                experiment.task.fit(
                    student, teacher, settings=replace(settings, epochs=epochs, lr=lr), seed=0
                )
                took = time.perf_counter() - began
                found = cosine(student, x, y)
                print(f"  lr {lr:g}, {epochs} epochs: val cosine {found:.4f} ({took:.0f} s)")
                runs.append(
                    {
                        "ratio": ratio,
                        "parameters": size,
                        "untrained": start,
                        "lr": lr,
                        "epochs": epochs,
                        "cosine": found,
                        "seconds": took,
                    }
                )

    def key(run: dict[str, float]) -> tuple[float, float, float]:
        return run["ratio"], run["lr"], run["epochs"]

    kept: list[dict[str, float]] = json.loads(OUT.read_text())["runs"] if OUT.exists() else []
    ran = {key(r) for r in runs}
    results["runs"] = sorted([r for r in kept if key(r) not in ran] + runs, key=key)
    OUT.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
