"""A Hugging Face BERT sentence encoder, small enough for the tests (issue 14): the same
``transformers.BertModel`` class, attention and pooling as the MiniLM example
(``edgecompress.examples.minilm``), at 3 layers of 4 heads of 16 channels, its weights drawn at
seed 0 (the same in every process: Ray workers build it themselves). Token ids and an attention
mask in, a normalised embedding out; the targets are the teacher's own embeddings and the study
maximises their cosine similarity, as for MiniLM.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from edgecompress import Experiment, FinetuneSettings, RegressionTask, Target
from edgecompress.examples.minilm import SentenceEncoder
from tests.multi_input_experiment import Rows

VOCAB, LENGTH, WIDTH, HEADS, LAYERS = 120, 16, 64, 4, 3


def teacher() -> nn.Module:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=WIDTH,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=128,
        max_position_embeddings=LENGTH,
        attn_implementation="eager",
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        bert = BertModel(config, add_pooling_layer=False)
    return SentenceEncoder(bert).eval()


def tokens(n: int, seed: int) -> dict[str, torch.Tensor]:
    """Sentences of 4 to 16 random tokens (101 first, as a tokenizer's [CLS]), padded with 0."""
    rng = np.random.default_rng(seed)
    length = rng.integers(4, LENGTH + 1, n)
    ids = rng.integers(1, VOCAB, (n, LENGTH))
    ids[:, 0] = 101
    mask = (np.arange(LENGTH)[None, :] < length[:, None]).astype(np.int64)
    return {
        "input_ids": torch.tensor(ids * mask, dtype=torch.int64),
        "attention_mask": torch.tensor(mask, dtype=torch.int64),
    }


def _loader(n: int, seed: int, shuffle: bool) -> DataLoader:
    x = tokens(n, seed)
    with torch.no_grad():
        y = teacher()(**x)
    return DataLoader(
        Rows(x, y), batch_size=32, shuffle=shuffle, generator=torch.Generator().manual_seed(0)
    )


experiment = Experiment(
    name="bert",
    model=teacher,
    example_input={
        "input_ids": torch.zeros(1, LENGTH, dtype=torch.int64),
        "attention_mask": torch.ones(1, LENGTH, dtype=torch.int64),
    },
    task=RegressionTask(
        train=_loader(256, 0, True),
        val=_loader(128, 1, False),
        test=_loader(128, 2, False),
        metric="cosine",
        finetune=FinetuneSettings(epochs=1, lr=1e-3, kd_weight=0.0),
    ),
    target=Target(name="local-cpu", threads=1, batch_size=1),
)
