"""A Linear-heavy example: compress an MLP trained on MNIST-1D.

    edgecompress search edgecompress.examples.mnist1d_mlp:experiment --speedup 5 --trials 24

Four hidden layers of 1024 units: int4 weights (MatMulNBits) and dynamic int8 act on exactly
such MatMuls, where on the convolutions of the CNN example (``mnist1d``) they do not apply
or pay off.
"""

import torch

from edgecompress import Experiment, FinetuneSettings, Target
from edgecompress.tasks import mnist1d

experiment = Experiment(
    name="mnist1d-mlp",
    model=mnist1d.mlp_teacher,  # trained on first use (under a minute), then cached
    example_input=torch.zeros(1, 40),
    task=mnist1d.task(finetune=FinetuneSettings(epochs=8, temperature=4.0, kd_weight=0.7)),
    target=Target(name="local-cpu", threads=1, batch_size=1),
)
