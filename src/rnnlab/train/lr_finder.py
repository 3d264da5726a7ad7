"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates"; popularised by fastai).

Train from the current weights while raising the learning rate exponentially every batch, from
``start_lr`` to ``end_lr``; record the loss; stop when it diverges. A good rate sits on the
steepest descent of the loss curve, about an order of magnitude below where it blows up.
The model and optimizer are restored afterwards: the test changes nothing.
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from rnnlab.errors import RnnlabError
from rnnlab.train import distributed as dist_utils
from rnnlab.train.checkpoint import rng_state, set_rng_state
from rnnlab.train.data import make_data


@dataclass
class RangeTest:
    lrs: list[float] = field(default_factory=list)
    raw_losses: list[float] = field(default_factory=list)  # per batch (global mean under DDP)
    losses: list[float] = field(default_factory=list)      # exponentially smoothed, as plotted
    suggestion: float | None = None
    min_loss_lr: float | None = None

    def plot(self, path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from rnnlab.runs import save_figure

        fig, ax = plt.subplots(figsize=(6.5, 4))
        ax.semilogx(self.lrs, self.raw_losses, color="0.75", lw=0.8, label="batch loss")
        ax.semilogx(self.lrs, self.losses, label="smoothed loss")
        if self.suggestion:
            ax.axvline(self.suggestion, color="crimson", ls="--", label=f"suggested {self.suggestion:.2g}")
        finite = [v for v in self.losses if math.isfinite(v)]
        if finite:  # the blow-up at the end would squash the part of the curve that matters
            top = max(finite[:int(np.argmin(finite)) + 1])
            low = min(v for v in self.raw_losses + finite if math.isfinite(v))
            top = top + 0.3 * (top - low) + 1e-12
            ax.set_ylim(low - 0.05 * (top - low), top)
        ax.set(xlabel="learning rate (log)", ylabel="training loss", title="Learning-rate range test")
        ax.grid(alpha=0.3)
        ax.legend()
        save_figure(fig, path)


def lr_range_test(trainer, x, y=None, start_lr: float = 1e-6, end_lr: float = 1.0, num_steps: int = 100,
                  batch_size: int = 32, smoothing: float = 0.05, diverge: float = 4.0) -> RangeTest:
    """Run the range test with ``trainer``'s model, loss and optimizer on the given data.

    Stops early once the smoothed loss exceeds ``diverge`` times its lowest value or a batch loss
    is NaN/Inf. Under torchrun every rank takes its share of each batch (as in ``fit``) and the
    recorded loss is the global mean, so every rank sees the same curve and suggestion."""
    if not (0 < start_lr < end_lr):
        raise RnnlabError(f"need 0 < start_lr < end_lr, got {start_lr}, {end_lr}")
    if num_steps < 5:
        raise RnnlabError(f"num_steps must be >= 5, got {num_steps}")
    data = make_data(x, y, "x")
    saved = (copy.deepcopy(trainer.model.state_dict()), copy.deepcopy(trainer.optimizer.state_dict()),
             rng_state(), trainer.on_nan)
    factor = (end_lr / start_lr) ** (1.0 / (num_steps - 1))
    result = RangeTest()
    trainer.model.train()
    trainer.on_nan = "skip"  # a NaN/Inf loss is the end of the test, not an error
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _run(trainer, data, result, start_lr, factor, num_steps, batch_size, smoothing, diverge)
    finally:
        trainer.model.load_state_dict(saved[0])
        trainer.optimizer.load_state_dict(saved[1])
        set_rng_state(saved[2])  # the test leaves no trace, not even in the random stream
        trainer.on_nan = saved[3]
    _suggest(result)
    return result


def _run(trainer, data, result, start_lr, factor, num_steps, batch_size, smoothing, diverge) -> None:
    avg, best, step, epoch = 0.0, math.inf, 0, 0
    while step < num_steps:
        if hasattr(trainer.model, "reset_states"):
            trainer.model.reset_states()
        any_batch = False
        for inputs, target, share in data.batches(batch_size, True, trainer.seed or 0, epoch, 0,
                                                  trainer.rank, trainer.world):
            any_batch = True
            lr = start_lr * factor**step
            for group in trainer.optimizer.param_groups:
                group["lr"] = lr
            logs = trainer._train_step(inputs, target, share, epoch, step)  # the one training step
            if logs is None:  # NaN/Inf on some rank (the trainer agrees on it across ranks)
                return
            if trainer.world > 1:
                logs = dist_utils.all_reduce_sums({"_n": logs["_n"], "loss": logs["loss"]})
            loss = logs["loss"] / logs["_n"]
            avg = smoothing * loss + (1 - smoothing) * avg  # from 0, then bias-corrected (as Adam does)
            smoothed = avg / (1 - (1 - smoothing) ** (step + 1))
            result.lrs.append(lr)
            result.raw_losses.append(loss)
            result.losses.append(smoothed)
            best = min(best, smoothed)
            step += 1
            if not math.isfinite(smoothed) or smoothed > diverge * best or step >= num_steps:
                return
        if not any_batch:
            raise RnnlabError("the range test got no training batches")
        epoch += 1


def _suggest(result: RangeTest, window_decades: float = 1.0) -> None:
    """The rate at the steepest descent of the loss against log10(lr), before the loss is lowest.

    Slopes are least-squares fits over windows of about ``window_decades`` of rates on the raw
    per-batch losses: the fit averages out batch noise (a single noisy dip would otherwise win)
    without the lag of the exponential smoothing, which drifts the curve towards higher rates."""
    raw, lrs = np.array(result.raw_losses), np.array(result.lrs)
    keep = np.isfinite(raw)
    raw, x = raw[keep], np.log10(lrs[keep])
    if len(raw) < 5:
        return
    per_decade = (len(x) - 1) / max(x[-1] - x[0], 1e-12)
    w = int(min(len(x), max(5, round(window_decades * per_decade))))
    centres, means, slopes = [], [], []
    for i in range(len(x) - w + 1):
        xs, ys = x[i:i + w], raw[i:i + w]
        centres.append(xs.mean())
        means.append(ys.mean())
        slopes.append(np.dot(xs - xs.mean(), ys - ys.mean()) / np.dot(xs - xs.mean(), xs - xs.mean()))
    lowest = int(np.argmin(means))
    result.min_loss_lr = float(10 ** centres[lowest])
    steepest = int(np.argmin(slopes[:lowest + 1]))
    if slopes[steepest] >= 0:  # no descent before the minimum: a decade below it is the safe guess
        result.suggestion = result.min_loss_lr / 10
    else:
        result.suggestion = float(10 ** centres[steepest])
