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

Dimensions past the batch one are fixed at the example's unless ``Experiment.dynamic_axes``
names them (``{"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}}``): the
exported model then takes any size there (inputs sharing a label vary together), and the
output's dimensions that follow it are found by running the model at half and twice the
example's size.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
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
    # the dimensions past the batch one that may vary: (input name, dimension, label), and the
    # output's that follow them: (dimension, label)
    axes: tuple[tuple[str, int, str], ...] = ()
    output_axes: tuple[tuple[int, str], ...] = ()

    def axes_of(self, name: str) -> dict[int, str]:
        """The dynamic dimensions of input ``name``, the batch one included."""
        return {0: "batch", **{d: label for n, d, label in self.axes if n == name}}

    def output_axes_all(self) -> dict[int, str]:
        """The dynamic dimensions of the output, the batch one included."""
        return {0: "batch", **dict(self.output_axes)}

    @classmethod
    def of(
        cls, model: nn.Module, example: Any, dynamic: Mapping[str, Mapping[int, str]] | None = None
    ) -> InputSpec:
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
        spec = cls(
            form=form,
            keys=tuple(keys),
            names=tuple(names),
            dtypes=tuple(values[k].dtype for k in keys),
            shapes=tuple(tuple(values[k].shape) for k in keys),
        )
        if not dynamic:
            return spec
        axes = spec._checked_axes(dynamic)
        return replace(spec, axes=axes, output_axes=_output_axes(model, example, spec, axes))

    def _checked_axes(
        self, dynamic: Mapping[str, Mapping[int, str]]
    ) -> tuple[tuple[str, int, str], ...]:
        """``Experiment.dynamic_axes`` as (input, dimension, label), each checked."""
        where = "Experiment.dynamic_axes"
        if not isinstance(dynamic, Mapping):
            raise EdgeCompressError(
                f"{where} must map input names to {{dimension: label}}, e.g. "
                f"{{{self.names[0]!r}: {{1: 'sequence'}}}}; got {type(dynamic).__name__}."
            )
        found = []
        for name, dims in dynamic.items():
            if name not in self.names:
                raise EdgeCompressError(
                    f"{where} names input {name!r}; the model's inputs are "
                    f"{', '.join(map(repr, self.names))}."
                )
            rank = len(self.shapes[self.names.index(name)])
            if not isinstance(dims, Mapping) or not dims:
                raise EdgeCompressError(
                    f"{where}[{name!r}] must map dimensions to labels, e.g. {{1: 'sequence'}}."
                )
            for dim, label in dims.items():
                if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim < rank:
                    raise EdgeCompressError(
                        f"{where}[{name!r}]: dimension {dim!r} is not one past the batch "
                        f"dimension of an input of shape {self.shapes[self.names.index(name)]} "
                        f"(1 to {rank - 1}; the batch dimension 0 is always dynamic)."
                    )
                if not isinstance(label, str) or not label.isidentifier() or label == "batch":
                    raise EdgeCompressError(
                        f"{where}[{name!r}][{dim}]: the label {label!r} must be a word other "
                        "than 'batch' (inputs that vary together share one, e.g. 'sequence')."
                    )
                found.append((name, dim, label))
        for label in {label for _, _, label in found}:
            sizes = {self.shapes[self.names.index(n)][d] for n, d, lab in found if lab == label}
            if len(sizes) > 1:
                raise EdgeCompressError(
                    f"{where}: the dimensions labelled {label!r} vary together, but the example "
                    f"input has them at sizes {sorted(sizes)}; give them one size."
                )
        return tuple(found)

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
            got_shape = tuple(getattr(leaf, "shape", ()))
            free = self.axes_of(name)
            if len(got_shape) != len(shape) or any(
                g != e
                for d, (g, e) in enumerate(zip(got_shape, shape, strict=False))
                if d not in free
            ):
                raise EdgeCompressError(
                    f"{where}: input {name!r} has shape {got_shape}, the example "
                    f"input's {shape}; {expected}. Pad or crop to the example's shape (the "
                    "exported model has a fixed shape past the batch dimension, except where "
                    "Experiment.dynamic_axes names one)."
                )


def resized(spec: InputSpec, example: Any) -> list[tuple[str, int, int, Any]]:
    """For each label of ``spec.axes``: ``(label, example's size, other size, the example at
    it)``, at half and at twice the example's size (the first positions, repeated as needed)."""
    found = []
    for label in dict.fromkeys(label for _, _, label in spec.axes):
        dims = [(n, d) for n, d, lab in spec.axes if lab == label]
        size = spec.shapes[spec.names.index(dims[0][0])][dims[0][1]]
        for other in sorted({size // 2, 2 * size} - {0}):
            found.append((label, size, other, _resized(example, spec, dims, other)))
    return found


def _resized(example: Any, spec: InputSpec, dims: list[tuple[str, int]], other: int) -> Any:
    """``example`` with every ``(input, dimension)`` of ``dims`` at size ``other``."""
    by_key = {spec.keys[spec.names.index(n)]: [d for m, d in dims if m == n] for n, _ in dims}

    def change(key: Any, x: torch.Tensor) -> torch.Tensor:
        for d in by_key.get(key, ()):
            reps = -(-other // x.shape[d])
            x = torch.cat([x] * reps, dim=d).narrow(d, 0, other)
        return x

    form = form_of(example)
    if form == "dict":
        return {k: change(k, v) for k, v in example.items()}
    if form == "tuple":
        return tuple(change(i, v) for i, v in enumerate(example))
    return change(None, example)


def _output_axes(
    model: nn.Module, example: Any, spec: InputSpec, axes: tuple[tuple[str, int, str], ...]
) -> tuple[tuple[int, str], ...]:
    """The output's dimensions that follow each label: the model run at the example's size and
    at half and twice it, label by label (a model that rejects either is refused). An output
    dimension of the input's size at every size takes its label; one that changes otherwise
    (a strided or pooled length) gets a label of its own, ``<label>_out<dimension>``."""
    model = model.eval()
    with torch.no_grad():
        base = call(model, example)
    if not isinstance(base, torch.Tensor):
        raise EdgeCompressError(
            "Experiment.dynamic_axes needs a model that returns one tensor; it returns "
            f"{type(base).__name__}."
        )
    found: dict[int, str] = {}
    spec = replace(spec, axes=axes)
    for label, size, other, changed in resized(spec, example):
        named = ", ".join(f"{n} dimension {d}" for n, d, lab in axes if lab == label)
        try:
            with torch.no_grad():
                out = call(model, changed)
        except Exception as exc:  # noqa: BLE001 - the model cannot take another size there
            raise EdgeCompressError(
                f"Experiment.dynamic_axes: the model rejects {named} ({label!r}) at size {other}"
                f" (the example's {size}): {type(exc).__name__}: {str(exc)[:200]}. Name only "
                "dimensions the model takes at any size (a table of positions as long as the "
                "example cannot take longer inputs: give the example a shorter length)."
            ) from None
        if not isinstance(out, torch.Tensor) or out.dim() != base.dim():
            raise EdgeCompressError(
                f"Experiment.dynamic_axes: the model's output has {base.dim()} dimensions at the "
                f"example's {label!r} and not at size {other}; it must keep its rank."
            )
        for d in range(1, base.dim()):
            if out.shape[d] != base.shape[d]:
                follows = base.shape[d] == size and out.shape[d] == other
                found.setdefault(d, label if follows else f"{label}_out{d}")
    return tuple(sorted(found.items()))


def _torch_dtype(dtype: Any) -> torch.dtype | None:
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, np.dtype):
        return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype
    return None
