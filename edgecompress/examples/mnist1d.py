"""The built-in example: compress a wide 1D CNN trained on MNIST-1D.

    edgecompress search edgecompress.examples.mnist1d:experiment --speedup 10 --trials 24
    edgecompress search examples/mnist1d.py:experiment ...      (the same, in a clone)

Copy this file for your own model: ``model`` returns your trained model (a fresh instance per
call), ``example_input`` is one batch it accepts, ``task`` holds your data loaders.
"""

import torch

from edgecompress import Experiment, FinetuneSettings, Target
from edgecompress.tasks import mnist1d

experiment = Experiment(
    name="mnist1d",
    model=mnist1d.teacher,  # trained on first use (a few minutes), then cached
    example_input=torch.zeros(1, 40),
    task=mnist1d.task(finetune=FinetuneSettings(epochs=8, temperature=4.0, kd_weight=0.7)),
    target=Target(name="local-cpu", threads=1, batch_size=1),
)
