"""A test teacher trained once per test session and loaded after: the experiments' model
factories are called for every plan built (the reference, each probe, each trial), and
training the teacher on each call cost the multi-input tests most of their minute."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn


def trained_once(
    name: str, build: Callable[[], nn.Module], train: Callable[[nn.Module], None]
) -> nn.Module:
    """``build()`` with the weights ``train`` gave it the first time, kept in
    ``$EDGECOMPRESS_CACHE`` (a per-session folder in the tests); in eval mode. Its own random
    state: the same teacher whichever test trains it first, the caller's state untouched."""
    folder = Path(os.environ.get("EDGECOMPRESS_CACHE", tempfile.gettempdir()))
    path = folder / f"{name}-teacher.pt"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build()
        if not path.exists():
            train(model)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save(model.state_dict(), tmp)
            tmp.replace(path)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()
