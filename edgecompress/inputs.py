"""A model's inputs: one tensor, several positional tensors, or keyword tensors.

``Experiment.example_input`` (and every batch of inputs a task's loaders yield) is one of:

- a tensor: ``model(x)``; exported as the ONNX input ``input``;
- a tuple or list of tensors: ``model(*xs)``, e.g. an image and its metadata; exported under the
  names of ``forward``'s positional parameters (``image``, ``meta``);
- a dict of tensors: ``model(**xs)``, e.g. ``{"input_ids": ..., "attention_mask": ...}``;
  exported under its keys.

Floating point inputs are fed to ONNX Runtime as float32, integers (token ids) and booleans
(masks) in their own dtype. An input the exported graph does not read (the model ignores it) is
dropped by the exporter, and feeds leave it out. The functions here work on such a structure
whether its leaves are tensors or numpy arrays; ``InputSpec`` adds the names, checked once.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecompress.errors import EdgeCompressError

SINGLE = "input"  # the ONNX input name of a model that takes one tensor


def form_of(x: Any) -> str:
    if isinstance(x, Mapping):
        return "dict"
    if isinstance(x, (tuple, list)):
        return "tuple"
    return "tensor"


def leaves(x: Any) -> Iterator[tuple[Any, Any]]:
    """``(key, leaf)`` pairs: ``(None, x)`` for one tensor, positions for a tuple, keys for a
    dict."""
    form = form_of(x)
    if form == "dict":
        yield from x.items()
    elif form == "tuple":
        yield from enumerate(x)
    else:
        yield None, x


def _rebuild(x: Any, leaf: Any) -> Any:
    """``x``'s structure with ``leaf(value)`` in place of each leaf."""
    form = form_of(x)
    if form == "dict":
        return {k: leaf(v) for k, v in x.items()}
    if form == "tuple":
        return tuple(leaf(v) for v in x)
    return leaf(x)


def call(model: nn.Module, x: Any) -> Any:
    """``model`` run on inputs of any form."""
    form = form_of(x)
    if form == "dict":
        return model(**x)
    if form == "tuple":
        return model(*x)
    return model(x)


def rows(x: Any) -> int:
    """The batch size (the first leaf's first dimension)."""
    _, leaf = next(leaves(x))
    return int(leaf.shape[0])


def take(x: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of every input."""
    return _rebuild(x, lambda v: v[start:stop])


def to_numpy(x: Any) -> Any:
    """numpy arrays as ONNX Runtime is fed: floating point as float32, integers and booleans
    as they are."""

    def leaf(v: Any) -> np.ndarray:
        a = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
        if a.dtype.kind == "f" or a.dtype.kind == "c":
            a = a.astype(np.float32)
        return np.ascontiguousarray(a)

    return _rebuild(x, leaf)


def to_torch(x: Any) -> Any:
    return _rebuild(x, lambda v: v if isinstance(v, torch.Tensor) else torch.from_numpy(v))


def concat(batches: Sequence[Any]) -> Any:
    """The batches (all of one form) joined along the batch dimension, as numpy arrays."""
    first = batches[0]
    form = form_of(first)
    if form == "dict":
        return {k: np.concatenate([to_numpy(b[k]) for b in batches]) for k in first}
    if form == "tuple":
        return tuple(np.concatenate([to_numpy(b[i]) for b in batches]) for i in range(len(first)))
    return np.concatenate([to_numpy(b) for b in batches])


def repeat_first(x: Any, batch_size: int) -> Any:
    """The first row of every input repeated ``batch_size`` times (a latency feed)."""
    return _rebuild(
        to_numpy(x), lambda a: np.ascontiguousarray(np.repeat(a[:1], batch_size, axis=0))
    )


def describe(x: Any) -> str:
    """``input_ids int64 (1, 16), attention_mask int64 (1, 16)``: each input's name (or
    position), dtype and shape, for messages."""
    parts = []
    for key, leaf in leaves(x):
        dtype = str(getattr(leaf, "dtype", type(leaf).__name__)).replace("torch.", "")
        shape = tuple(getattr(leaf, "shape", ()))
        name = "" if key is None else (f"[{key}] " if isinstance(key, int) else f"{key} ")
        parts.append(f"{name}{dtype} {shape}")
    return ", ".join(parts)


def _positional_names(model: nn.Module, count: int) -> list[str]:
    """The names of ``forward``'s first ``count`` positional parameters (``input_<i>`` past
    a ``*args``)."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    names: list[str] = []
    for p in params:
        if len(names) == count:
            break
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
        elif p.kind == p.VAR_POSITIONAL:
            break
    names += [f"input_{i}" for i in range(len(names), count)]
    return names


def _signature_order(model: nn.Module, keys: Sequence[str]) -> list[str]:
    """``keys`` in the order of ``forward``'s parameters (the order the exporter gives the
    graph's inputs), keys the signature does not name (``**kwargs``) last."""
    try:
        order = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        order = []
    known = [k for k in order if k in keys]
    return known + [k for k in keys if k not in known]


@dataclass(frozen=True)
class InputSpec:
    """The form of a model's inputs, their ONNX names, and each one's dtype and shape (one
    example's, batch dimension first).

    ``keys`` address the inputs in a batch (positions for a tuple, keys for a dict, ``None``
    for one tensor); ``names[i]`` is the ONNX name of ``keys[i]``.
    """

    form: str
    keys: tuple[Any, ...]
    names: tuple[str, ...]
    dtypes: tuple[torch.dtype, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, model: nn.Module, example: Any) -> InputSpec:
        form = form_of(example)
        pairs = list(leaves(example))
        bad = [k for k, v in pairs if not isinstance(v, torch.Tensor)]
        if bad or not pairs:
            raise EdgeCompressError(
                "Experiment.example_input must be a tensor, a tuple of tensors (positional "
                "arguments) or a dict of tensors (keyword arguments); "
                + (f"input {bad[0]!r} is not a tensor." if bad else "it holds no tensor.")
            )
        if form == "dict":
            keys: list[Any] = _signature_order(model, [str(k) for k, _ in pairs])
            names = list(keys)
        elif form == "tuple":
            keys = list(range(len(pairs)))
            names = _positional_names(model, len(pairs))
        else:
            keys, names = [None], [SINGLE]
        values = {k: v for k, v in pairs}
        return cls(
            form=form,
            keys=tuple(keys),
            names=tuple(names),
            dtypes=tuple(values[k].dtype for k in keys),
            shapes=tuple(tuple(values[k].shape) for k in keys),
        )

    def _leaf(self, x: Any, key: Any) -> Any:
        return x if key is None else x[key]

    def named(self, x: Any) -> dict[str, np.ndarray]:
        """A batch of this form as ``{ONNX name: numpy array}``."""
        x = to_numpy(x)
        return {name: self._leaf(x, key) for key, name in zip(self.keys, self.names, strict=True)}

    def export_args(self, x: Any) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
        """``(args, kwargs)`` for ``torch.onnx.export``."""
        if self.form == "dict":
            return (), {k: x[k] for k in self.keys}
        if self.form == "tuple":
            return tuple(x), None
        return (x,), None

    def describe(self) -> str:
        return ", ".join(
            f"{name} {str(dtype).replace('torch.', '')} {shape}"
            for name, dtype, shape in zip(self.names, self.dtypes, self.shapes, strict=True)
        )

    def check(self, x: Any, where: str) -> None:
        """``x`` (a batch) has this form, these inputs, and each input's dtype (integers
        exactly: token ids; floating point any, fed as float32) and trailing dimensions; the
        error names the input, what it is and what was expected."""
        expected = f"expected {self.describe()} (batch dimension first)"
        if form_of(x) != self.form:
            raise EdgeCompressError(
                f"{where}: the inputs are a {form_of(x)} ({describe(x)}), the example input a "
                f"{self.form}; {expected}. Give both in one form."
            )
        if self.form == "dict" and set(x) != set(self.keys):
            missing, extra = sorted(set(self.keys) - set(x)), sorted(set(x) - set(self.keys))
            raise EdgeCompressError(
                f"{where}: inputs {sorted(x)}, the example input's {sorted(self.keys)} (missing "
                f"{missing}, unexpected {extra}); {expected}."
            )
        if self.form == "tuple" and len(x) != len(self.keys):
            raise EdgeCompressError(
                f"{where}: {len(x)} inputs, the example input has {len(self.keys)}; {expected}."
            )
        for key, name, dtype, shape in zip(
            self.keys, self.names, self.dtypes, self.shapes, strict=True
        ):
            leaf = self._leaf(x, key)
            got = getattr(leaf, "dtype", None)
            got_t = _torch_dtype(got)
            floats = got_t is not None and got_t.is_floating_point and dtype.is_floating_point
            if got_t != dtype and not floats:
                raise EdgeCompressError(
                    f"{where}: input {name!r} is {got_t or type(leaf).__name__}, the example "
                    f"input's is {dtype}; {expected}. Make them agree (token ids: both "
                    "torch.int64)."
                )
            trailing = tuple(getattr(leaf, "shape", ()))[1:]
            if trailing != shape[1:]:
                raise EdgeCompressError(
                    f"{where}: input {name!r} has shape {tuple(leaf.shape)}, the example "
                    f"input's {shape}; {expected}. Pad or crop to the example's shape (the "
                    "exported model has a fixed shape past the batch dimension)."
                )


def _torch_dtype(dtype: Any) -> torch.dtype | None:
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, np.dtype):
        return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype
    return None
