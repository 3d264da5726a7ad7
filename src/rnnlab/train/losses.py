"""Losses by name, with the Keras meaning of each name.

Keras losses take *probabilities* (the output of a sigmoid/softmax layer); the ``*_logits`` names
take raw scores, as ``torch.nn`` losses do. Every loss averages over all elements but the class
axis, so per-step outputs ``(batch, time, classes)`` work like ``(batch, classes)``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnlab.errors import RnnlabError

EPS = 1e-7  # Keras' backend epsilon: probabilities are clipped to [EPS, 1-EPS] before the log


def _check(pred, target, name):
    if not isinstance(pred, Tensor):
        raise RnnlabError(f"loss {name!r} expects the model to return a tensor, got {type(pred).__name__}")
    if target is None:
        raise RnnlabError(f"loss {name!r} needs targets (y), got None")


def _same_shape(pred: Tensor, target: Tensor, name: str) -> Tensor:
    if pred.shape != target.shape:
        if pred.numel() == target.numel() and pred.shape[0] == target.shape[0]:
            return target.reshape(pred.shape)  # (N,) vs (N, 1): Keras accepts it
        raise RnnlabError(f"loss {name!r}: predictions have shape {tuple(pred.shape)} but targets {tuple(target.shape)}")
    return target


def mean_squared_error(pred: Tensor, target: Tensor) -> Tensor:
    _check(pred, target, "mse")
    return F.mse_loss(pred, _same_shape(pred, target.to(pred.dtype), "mse"))


def mean_absolute_error(pred: Tensor, target: Tensor) -> Tensor:
    _check(pred, target, "mae")
    return F.l1_loss(pred, _same_shape(pred, target.to(pred.dtype), "mae"))


def binary_crossentropy(pred: Tensor, target: Tensor) -> Tensor:
    """``-mean(y log p + (1-y) log(1-p))`` on probabilities ``p``."""
    _check(pred, target, "binary_crossentropy")
    target = _same_shape(pred, target.to(pred.dtype), "binary_crossentropy")
    p = pred.clamp(EPS, 1 - EPS)
    return -(target * p.log() + (1 - target) * (1 - p).log()).mean()


def categorical_crossentropy(pred: Tensor, target: Tensor) -> Tensor:
    """``-mean(sum_c y_c log p_c)`` on probabilities and one-hot targets."""
    _check(pred, target, "categorical_crossentropy")
    target = _same_shape(pred, target.to(pred.dtype), "categorical_crossentropy")
    p = pred.clamp(EPS, 1 - EPS)
    return -(target * p.log()).sum(-1).mean()


def _sparse_targets(pred: Tensor, target: Tensor, name: str) -> Tensor:
    if target.is_floating_point():
        if not torch.equal(target, target.round()):
            raise RnnlabError(f"loss {name!r} expects integer class labels, got non-integer floats")
        target = target.long()
    if target.shape != pred.shape[:-1]:
        if target.numel() == pred[..., 0].numel():
            target = target.reshape(pred.shape[:-1])
        else:
            raise RnnlabError(
                f"loss {name!r}: predictions {tuple(pred.shape)} need labels of shape {tuple(pred.shape[:-1])}, "
                f"got {tuple(target.shape)}"
            )
    n = pred.shape[-1]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= n):
        raise RnnlabError(f"loss {name!r}: labels must be in [0, {n - 1}], got range [{int(target.min())}, {int(target.max())}]")
    return target.long()


def sparse_categorical_crossentropy(pred: Tensor, target: Tensor) -> Tensor:
    """``-mean(log p[label])`` on probabilities and integer labels."""
    _check(pred, target, "sparse_categorical_crossentropy")
    target = _sparse_targets(pred, target, "sparse_categorical_crossentropy")
    p = pred.clamp(EPS, 1 - EPS)
    return F.nll_loss(p.log().reshape(-1, p.shape[-1]), target.reshape(-1))


def cross_entropy_logits(pred: Tensor, target: Tensor) -> Tensor:
    """``torch.nn.functional.cross_entropy`` on logits ``(..., classes)`` and integer labels."""
    _check(pred, target, "cross_entropy")
    target = _sparse_targets(pred, target, "cross_entropy")
    return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1))


def binary_crossentropy_logits(pred: Tensor, target: Tensor) -> Tensor:
    _check(pred, target, "binary_crossentropy_logits")
    return F.binary_cross_entropy_with_logits(pred, _same_shape(pred, target.to(pred.dtype), "bce"))


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mse": mean_squared_error,
    "mean_squared_error": mean_squared_error,
    "mae": mean_absolute_error,
    "mean_absolute_error": mean_absolute_error,
    "binary_crossentropy": binary_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "cross_entropy": cross_entropy_logits,
    "binary_crossentropy_logits": binary_crossentropy_logits,
}


def get_loss(loss) -> tuple[str, Callable]:
    """``(name, fn)`` for a loss name or callable ``fn(pred, target) -> scalar``."""
    if callable(loss):
        return getattr(loss, "__name__", "loss"), loss
    if isinstance(loss, str) and loss in LOSSES:
        return loss, LOSSES[loss]
    raise RnnlabError(f"loss must be a callable or one of {sorted(LOSSES)}, got {loss!r}")
