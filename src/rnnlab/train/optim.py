"""Optimizers and learning-rate schedules, with Keras argument names and defaults."""
from __future__ import annotations

import torch

from rnnlab.errors import RnnlabError


def make_optimizer(optimizer, params, learning_rate: float = 1e-3, weight_decay: float = 0.0, **kwargs):
    """``"sgd"`` (momentum, nesterov), ``"adam"`` (beta_1, beta_2, epsilon, amsgrad), ``"adamw"``,
    ``"rmsprop"`` (rho, momentum, epsilon), or an already built ``torch.optim.Optimizer``."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if not (isinstance(learning_rate, (int, float)) and learning_rate >= 0):
        raise RnnlabError(f"learning_rate must be a number >= 0, got {learning_rate!r}")
    params = [p for p in params if p.requires_grad]
    if not params:
        raise RnnlabError("the model has no trainable parameters")
    name = str(optimizer).lower()
    eps = kwargs.pop("epsilon", 1e-7)  # Keras' default epsilon (torch's is 1e-8)
    if name == "sgd":
        return torch.optim.SGD(params, lr=learning_rate, momentum=kwargs.pop("momentum", 0.0),
                               nesterov=kwargs.pop("nesterov", False), weight_decay=weight_decay)
    if name in ("adam", "adamw"):
        cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        betas = (kwargs.pop("beta_1", 0.9), kwargs.pop("beta_2", 0.999))
        return cls(params, lr=learning_rate, betas=betas, eps=eps, amsgrad=kwargs.pop("amsgrad", False),
                   weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=learning_rate, alpha=kwargs.pop("rho", 0.9), eps=eps,
                                   momentum=kwargs.pop("momentum", 0.0), weight_decay=weight_decay)
    raise RnnlabError(f"optimizer must be 'sgd', 'adam', 'adamw', 'rmsprop' or a torch.optim.Optimizer, got {optimizer!r}")


SCHEDULES = ("step", "exponential", "cosine", "plateau")


def make_schedule(schedule, optimizer, epochs: int, **kwargs):
    """A per-epoch learning-rate schedule: ``"step"`` (step_size, gamma), ``"exponential"`` (gamma),
    ``"cosine"`` (to ``min_lr`` over ``epochs``), ``"plateau"`` (factor, patience, min_lr; on val_loss),
    an LR scheduler, or None."""
    if schedule is None or isinstance(schedule, (torch.optim.lr_scheduler.LRScheduler,
                                                 torch.optim.lr_scheduler.ReduceLROnPlateau)):
        return schedule
    sched = torch.optim.lr_scheduler
    if schedule == "step":
        return sched.StepLR(optimizer, step_size=kwargs.get("step_size", max(1, epochs // 3)), gamma=kwargs.get("gamma", 0.1))
    if schedule == "exponential":
        return sched.ExponentialLR(optimizer, gamma=kwargs.get("gamma", 0.9))
    if schedule == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=max(1, epochs), eta_min=kwargs.get("min_lr", 0.0))
    if schedule == "plateau":
        return sched.ReduceLROnPlateau(optimizer, factor=kwargs.get("factor", 0.5), patience=kwargs.get("patience", 2),
                                       min_lr=kwargs.get("min_lr", 0.0))
    raise RnnlabError(f"schedule must be one of {SCHEDULES}, an LR scheduler or None, got {schedule!r}")
