"""Training metrics (``metrics=["accuracy", "mae"]``): per-batch sums, averaged over samples.

``accuracy`` takes the Keras meaning for the loss in use: binary (threshold 0.5) for binary
cross-entropy or a single output, argmax against one-hot targets for categorical cross-entropy,
argmax against integer labels for the sparse losses.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from rnnlab.errors import RnnlabError


def binary_accuracy(pred: Tensor, target: Tensor, threshold: float = 0.5) -> Tensor:
    target = target.reshape(pred.shape).to(pred.dtype)
    return ((pred > threshold).to(pred.dtype) == target).to(torch.float32).mean()


def binary_accuracy_logits(pred: Tensor, target: Tensor) -> Tensor:
    return binary_accuracy(pred, target, threshold=0.0)


def categorical_accuracy(pred: Tensor, target: Tensor) -> Tensor:
    return (pred.argmax(-1) == target.reshape(pred.shape).argmax(-1)).to(torch.float32).mean()


def sparse_categorical_accuracy(pred: Tensor, target: Tensor) -> Tensor:
    return (pred.argmax(-1) == target.reshape(pred.shape[:-1]).long()).to(torch.float32).mean()


def mae(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target.reshape(pred.shape).to(pred.dtype)).abs().mean()


def mse(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target.reshape(pred.shape).to(pred.dtype)).pow(2).mean()


_NAMED = {
    "mae": mae,
    "mean_absolute_error": mae,
    "mse": mse,
    "mean_squared_error": mse,
    "binary_accuracy": binary_accuracy,
    "categorical_accuracy": categorical_accuracy,
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
}


def accuracy_for_loss(loss_name: str, pred_shape: torch.Size | None = None) -> Callable:
    """The function Keras means by ``"accuracy"`` when training with ``loss_name``."""
    if loss_name in ("sparse_categorical_crossentropy", "cross_entropy"):
        return sparse_categorical_accuracy
    if loss_name == "categorical_crossentropy":
        return categorical_accuracy
    if loss_name == "binary_crossentropy_logits":
        return binary_accuracy_logits
    if loss_name == "binary_crossentropy" or (pred_shape is not None and pred_shape[-1] == 1):
        return binary_accuracy
    return categorical_accuracy


def get_metric(metric, loss_name: str) -> tuple[str, Callable]:
    """``(name, fn)`` for a metric name or a callable ``fn(pred, target) -> scalar``."""
    if callable(metric):
        return getattr(metric, "__name__", "metric"), metric
    if metric in ("accuracy", "acc"):
        fn = accuracy_for_loss(loss_name)
        return "accuracy", (lambda p, t: accuracy_for_loss(loss_name, p.shape)(p, t)) if fn is categorical_accuracy else fn
    if metric in _NAMED:
        return metric, _NAMED[metric]
    raise RnnlabError(f"metric must be a callable or one of {sorted(['accuracy', *_NAMED])}, got {metric!r}")
