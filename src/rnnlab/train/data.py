"""What ``fit``/``evaluate``/``predict`` accept, turned into batches.

* arrays: a tensor / NumPy array (or a tuple of them for several inputs) plus targets ``y``;
  shuffled per epoch with a permutation that depends only on ``(seed, epoch)``, so a resumed run
  sees the same batches as an uninterrupted one;
* iterables: a ``DataLoader`` or any re-iterable yielding ``(inputs, targets)`` batches (inputs a
  tensor or a tuple of tensors), e.g. batches generated on the fly.

Under ``torch.distributed`` each rank takes its contiguous share of every global batch.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from rnnlab.errors import RnnlabError


def as_tensor(value, name: str) -> Tensor:
    """A tensor from a tensor / ndarray / nested list, float64 -> float32 (as Keras' floatx)."""
    if isinstance(value, Tensor):
        t = value
    else:
        try:
            arr = np.asarray(value)
        except Exception as exc:
            raise RnnlabError(f"{name} must be an array or tensor, got {type(value).__name__}: {exc}") from None
        if arr.dtype == object or arr.dtype.kind in "USO":
            raise RnnlabError(f"{name} must be numeric, got an array of dtype {arr.dtype} (text or mixed values?)")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.dtype == torch.float64:
        t = t.float()
    elif t.dtype == torch.bool:
        t = t.float()
    if t.is_floating_point() and t.numel() and not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).nonzero()[0].tolist()
        raise RnnlabError(f"{name} contains NaN or Inf (first at index {tuple(bad)}); clean or mask the data first")
    return t


class ArrayData:
    """Tensors held in memory; ``inputs`` is a tuple (one entry per model input)."""

    def __init__(self, x, y=None, name: str = "x"):
        inputs = tuple(x) if isinstance(x, (tuple, list)) and not _is_numeric_list(x) else (x,)
        self.inputs = tuple(as_tensor(v, name if len(inputs) == 1 else f"{name}[{i}]") for i, v in enumerate(inputs))
        self.target = None if y is None else as_tensor(y, "y")
        sizes = {int(t.shape[0]) if t.dim() else -1 for t in self.inputs}
        if self.target is not None:
            sizes.add(int(self.target.shape[0]) if self.target.dim() else -1)
        if -1 in sizes:
            raise RnnlabError(f"{name} and y must have a batch dimension, got a 0-d value")
        if len(sizes) != 1:
            shapes = [tuple(t.shape) for t in self.inputs] + ([tuple(self.target.shape)] if self.target is not None else [])
            raise RnnlabError(f"{name} and y must have the same number of samples, got shapes {shapes}")
        self.n = sizes.pop()
        if self.n == 0:
            raise RnnlabError(f"{name} is empty (0 samples)")

    def __len__(self) -> int:
        return self.n

    def split(self, fraction: float) -> tuple["ArrayData", "ArrayData"]:
        """Keras' ``validation_split``: the *last* ``fraction`` of samples, taken before shuffling."""
        if not 0.0 < fraction < 1.0:
            raise RnnlabError(f"validation_split must be in (0, 1), got {fraction}")
        cut = int(round(self.n * (1.0 - fraction)))
        if cut <= 0 or cut >= self.n:
            raise RnnlabError(f"validation_split={fraction} leaves an empty part of {self.n} samples")
        first, second = ArrayData.__new__(ArrayData), ArrayData.__new__(ArrayData)
        for part, sl in ((first, slice(0, cut)), (second, slice(cut, None))):
            part.inputs = tuple(t[sl] for t in self.inputs)
            part.target = None if self.target is None else self.target[sl]
            part.n = part.inputs[0].shape[0]
        return first, second

    def num_batches(self, batch_size: int) -> int:
        return -(-self.n // batch_size)

    def batches(self, batch_size: int, shuffle: bool, seed: int, epoch: int, start: int = 0,
                rank: int = 0, world: int = 1) -> Iterator[tuple[tuple[Tensor, ...], Tensor | None, float]]:
        """Yield ``(inputs, target, share)``: ``share`` is this rank's fraction of the global batch."""
        if shuffle:
            gen = torch.Generator().manual_seed(int(seed) * 100_003 + epoch)
            order = torch.randperm(self.n, generator=gen)
        else:
            order = torch.arange(self.n)
        for b in range(start, self.num_batches(batch_size)):
            idx = order[b * batch_size:(b + 1) * batch_size]
            n_global = len(idx)
            if world > 1:
                if n_global < world:
                    continue  # every rank must take part in each step; a tiny last batch is dropped
                idx = idx.tensor_split(world)[rank]
            yield tuple(t[idx] for t in self.inputs), (None if self.target is None else self.target[idx]), len(idx) / n_global


def _is_numeric_list(x) -> bool:
    """A plain nested list of numbers is one input, a list/tuple of arrays is several."""
    return isinstance(x, list) and len(x) > 0 and not isinstance(x[0], (Tensor, np.ndarray, list, tuple))


class IterableData:
    """A re-iterable of ``(inputs, targets)`` batches (DataLoader, generator factory, list)."""

    def __init__(self, iterable, name: str = "x"):
        if isinstance(iterable, Iterator) and not hasattr(iterable, "__len__"):
            # A one-shot generator would be empty in the second epoch: say so now.
            raise RnnlabError(
                f"{name} is a one-shot iterator; pass a re-iterable (DataLoader, list, or an object whose __iter__ "
                f"makes a fresh generator) so every epoch sees data"
            )
        self.iterable, self.name = iterable, name

    def num_batches(self, batch_size: int) -> int | None:
        try:
            return len(self.iterable)
        except TypeError:
            return None

    def batches(self, batch_size: int, shuffle: bool, seed: int, epoch: int, start: int = 0,
                rank: int = 0, world: int = 1):
        if hasattr(self.iterable, "set_epoch"):
            self.iterable.set_epoch(epoch)
        sampler = getattr(self.iterable, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        count = 0
        for b, item in enumerate(self.iterable):
            if b < start or (world > 1 and b % world != rank):
                continue
            inputs, target = _unpack(item, self.name, b)
            count += 1
            yield inputs, target, 1.0
        if count == 0 and start == 0:
            raise RnnlabError(f"{self.name} yielded no batches (empty dataset?)")


class BucketedBatches:
    """Batches of similar-length sequences, re-shuffled every epoch: for padded sequence data.

    A random batch of short interface strings with one long sentence pads everything to the long
    one; bucketing keeps padding (and so wasted recurrent steps) small. Each epoch the samples are
    permuted (seeded by ``seed`` and the epoch), cut into pools of ``pool`` batches, sorted by
    ``lengths`` inside a pool, cut into batches and the batch order shuffled. Every 2-D tensor is
    trimmed to its last non-``pad`` column within the batch. Pass it to ``Trainer.fit`` as ``x``
    (the targets travel with it); the trainer calls :meth:`set_epoch`.
    """

    def __init__(self, inputs: tuple, target: Tensor, lengths, batch_size: int, seed: int = 0,
                 shuffle: bool = True, pool: int = 50, pad: int = 0):
        self.inputs, self.target = tuple(inputs), target
        self.lengths = torch.as_tensor(lengths)
        n = int(self.lengths.shape[0])
        if n == 0:
            raise RnnlabError("BucketedBatches got no samples")
        if any(int(t.shape[0]) != n for t in (*self.inputs, target)):
            raise RnnlabError(f"every input and the target need {n} samples, got "
                              f"{[tuple(t.shape) for t in (*self.inputs, target)]}")
        if batch_size < 1:
            raise RnnlabError(f"batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size, self.seed, self.shuffle, self.pool, self.pad = n, batch_size, seed, shuffle, pool, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def _order(self) -> list[Tensor]:
        gen = torch.Generator().manual_seed(int(self.seed) * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=gen) if self.shuffle else torch.arange(self.n)
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, self.n, size):
            chunk = order[start:start + size]
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            batches += list(chunk.split(self.batch_size))
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
        return batches

    def _trim(self, t: Tensor) -> Tensor:
        if t.dim() != 2:
            return t
        used = (t != self.pad).any(0).nonzero()
        return t[:, :int(used.max()) + 1] if len(used) else t[:, :1]

    def __iter__(self):
        for idx in self._order():
            yield tuple(self._trim(t[idx]) for t in self.inputs), self._trim(self.target[idx])


def _unpack(item, name: str, b: int):
    if isinstance(item, Tensor):
        return (item,), None
    if isinstance(item, (tuple, list)) and len(item) == 2:
        inputs, target = item
        inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
        return inputs, target
    raise RnnlabError(f"{name}: batch {b} must be a tensor or an (inputs, targets) pair, got {type(item).__name__}")


def make_data(x, y=None, name: str = "x"):
    """``ArrayData`` for arrays / tensors, ``IterableData`` for loaders and other iterables."""
    if x is None:
        raise RnnlabError(f"{name} is None: pass arrays, tensors or a DataLoader")
    if isinstance(x, (ArrayData, IterableData)):
        return x
    if isinstance(x, (Tensor, np.ndarray)) or (isinstance(x, (tuple, list)) and (len(x) == 0 or isinstance(x[0], (Tensor, np.ndarray, list, float, int)))):
        return ArrayData(x, y, name)
    if y is not None:
        raise RnnlabError(f"{name} is an iterable of (inputs, targets) batches, so y must be None, got {type(y).__name__}")
    if hasattr(x, "__iter__"):
        return IterableData(x, name)
    raise RnnlabError(f"{name} must be a tensor, an array, a tuple of them, or an iterable of batches, got {type(x).__name__}")
