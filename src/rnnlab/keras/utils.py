"""Keras utilities: ``to_categorical``, ``pad_sequences``, ``set_random_seed``."""
from __future__ import annotations

import numpy as np

from rnnlab.errors import RnnlabError
from rnnlab.train import seed_everything


def to_categorical(y, num_classes: int | None = None, dtype="float32") -> np.ndarray:
    """Integer labels -> one-hot rows (the last axis is the class)."""
    y = np.asarray(y)
    if y.dtype.kind == "f":
        if not np.all(y == np.round(y)):
            raise RnnlabError("to_categorical expects integer class labels, got non-integer floats")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise RnnlabError(f"to_categorical expects integer class labels, got dtype {y.dtype}")
    if y.ndim > 1 and y.shape[-1] == 1:
        y = y[..., 0]
    if y.size and y.min() < 0:
        raise RnnlabError(f"to_categorical expects labels >= 0, got {y.min()}")
    n = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if y.size and y.max() >= n:
        raise RnnlabError(f"to_categorical: label {y.max()} does not fit num_classes={n}")
    return np.eye(n, dtype=dtype)[y]


def pad_sequences(sequences, maxlen: int | None = None, dtype="int32", padding: str = "pre", truncating: str = "pre",
                  value=0.0) -> np.ndarray:
    """Pad (or cut) lists of ids to one length; ``pre`` padding as Keras' default."""
    if padding not in ("pre", "post") or truncating not in ("pre", "post"):
        raise RnnlabError(f"padding and truncating must be 'pre' or 'post', got {padding!r}, {truncating!r}")
    seqs = [list(s) for s in sequences]
    maxlen = maxlen or max((len(s) for s in seqs), default=0)
    out = np.full((len(seqs), maxlen), value, dtype=dtype)
    for i, s in enumerate(seqs):
        s = s[-maxlen:] if truncating == "pre" else s[:maxlen]
        if not s:
            continue
        if padding == "post":
            out[i, :len(s)] = s
        else:
            out[i, -len(s):] = s
    return out


def set_random_seed(seed: int) -> None:
    """``keras.utils.set_random_seed``: seeds Python, NumPy and torch."""
    seed_everything(seed)
