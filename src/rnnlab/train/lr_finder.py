"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates"; popularised by fastai).

Train from the current weights while raising the learning rate exponentially every batch, from
``start_lr`` to ``end_lr``; record the (smoothed) loss; stop when it diverges. A good rate sits
on the steepest descent of the loss curve, about an order of magnitude below where it blows up.
The model and optimizer are restored afterwards: the test changes nothing.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np

from rnnlab.errors import RnnlabError
from rnnlab.train.data import make_data


@dataclass
class RangeTest:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)   # exponentially smoothed
    suggestion: float | None = None
    min_loss_lr: float | None = None

    def plot(self, path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from rnnlab.runs import save_figure

        fig, ax = plt.subplots(figsize=(6.5, 4))
        ax.semilogx(self.lrs, self.losses, label="smoothed loss")
        if self.suggestion:
            ax.axvline(self.suggestion, color="crimson", ls="--", label=f"suggested {self.suggestion:.2g}")
        ax.set(xlabel="learning rate (log)", ylabel="training loss", title="Learning-rate range test")
        ax.grid(alpha=0.3)
        ax.legend()
        save_figure(fig, path)


def lr_range_test(trainer, x, y=None, start_lr: float = 1e-6, end_lr: float = 1.0, num_steps: int = 100,
                  batch_size: int = 32, smoothing: float = 0.05, diverge: float = 4.0) -> RangeTest:
    """Run the range test with ``trainer``'s model, loss and optimizer on the given data."""
    if not (0 < start_lr < end_lr):
        raise RnnlabError(f"need 0 < start_lr < end_lr, got {start_lr}, {end_lr}")
    if num_steps < 5:
        raise RnnlabError(f"num_steps must be >= 5, got {num_steps}")
    data = make_data(x, y, "x")
    saved_model = copy.deepcopy(trainer.model.state_dict())
    saved_opt = copy.deepcopy(trainer.optimizer.state_dict())
    factor = (end_lr / start_lr) ** (1.0 / (num_steps - 1))
    result, avg, best = RangeTest(), 0.0, math.inf
    trainer.model.train()
    step, epoch = 0, 0
    try:
        while step < num_steps:
            for inputs, target, share in data.batches(batch_size, True, trainer.seed or 0, epoch):
                lr = start_lr * factor**step
                for group in trainer.optimizer.param_groups:
                    group["lr"] = lr
                logs = trainer._train_step(inputs, target, share, epoch, step)  # the one training step
                loss = math.inf if logs is None else logs["loss"] / logs["_n"]
                avg = smoothing * loss + (1 - smoothing) * avg  # from 0, then bias-corrected (as Adam does)
                smoothed = avg / (1 - (1 - smoothing) ** (step + 1))
                result.lrs.append(lr)
                result.losses.append(smoothed)
                best = min(best, smoothed)
                step += 1
                if not math.isfinite(smoothed) or smoothed > diverge * best or step >= num_steps:
                    step = num_steps
                    break
            epoch += 1
    finally:
        trainer.model.load_state_dict(saved_model)
        trainer.optimizer.load_state_dict(saved_opt)
    _suggest(result)
    return result


def _suggest(result: RangeTest, skip_start: int = 10, skip_end: int = 3) -> None:
    """Steepest descent of the smoothed loss against log(lr), before its minimum; the first batches
    (noisy, the smoother still warming up) and the last (divergence) are left out."""
    losses = np.array(result.losses)
    lrs = np.array(result.lrs)
    keep = np.isfinite(losses)
    losses, lrs = losses[keep], lrs[keep]
    if len(losses) > skip_start + skip_end + 5:
        losses, lrs = losses[skip_start:len(losses) - skip_end], lrs[skip_start:len(lrs) - skip_end]
    if len(losses) < 5:
        return
    lowest = int(np.argmin(losses))
    result.min_loss_lr = float(lrs[lowest])
    if lowest < 3:
        result.suggestion = result.min_loss_lr / 10
        return
    slope = np.gradient(losses[:lowest + 1], np.log(lrs[:lowest + 1]))
    result.suggestion = float(lrs[int(np.argmin(slope))])
