"""Callbacks with Keras names and meanings. The trainer calls, in order:
``on_train_begin``, then per epoch ``on_epoch_begin``, ``on_batch_end`` per batch, ``on_epoch_end``
(with the epoch's logs, e.g. ``{"loss": .., "val_loss": ..}``), then ``on_train_end``.
A callback stops training by setting ``trainer.stop_training = True``.
"""
from __future__ import annotations

import copy
import csv
import math
import warnings
from pathlib import Path

import numpy as np


class Callback:
    trainer = None

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer

    @property
    def model(self):
        return self.trainer.keras_model or self.trainer.model

    def on_train_begin(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_batch_end(self, batch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_train_end(self, logs=None): ...


class _Monitor(Callback):
    def __init__(self, monitor: str = "val_loss", mode: str = "auto", min_delta: float = 0.0):
        self.monitor, self.min_delta = monitor, abs(min_delta)
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
        self.mode = mode
        self.best = math.inf if mode == "min" else -math.inf

    def _value(self, logs):
        value = (logs or {}).get(self.monitor)
        if value is None:
            warnings.warn(f"{type(self).__name__}: metric {self.monitor!r} is not in the logs {sorted(logs or {})}", stacklevel=3)
        return value

    def _improved(self, value) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; optionally restore the best weights."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__(monitor, mode, min_delta)
        self.patience, self.restore_best_weights, self.start_from_epoch = patience, restore_best_weights, start_from_epoch
        self.verbose, self.baseline = verbose, baseline
        self.wait, self.stopped_epoch, self.best_weights, self.best_epoch = 0, 0, None, 0

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best_weights = 0, 0, None
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = self._value(logs)
        if value is None or epoch < self.start_from_epoch:
            return
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = copy.deepcopy(self.trainer.model.state_dict())
            return
        self.wait += 1
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.trainer.model.load_state_dict(self.best_weights)
        if self.stopped_epoch and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping (best {self.monitor}={self.best:.4g} at epoch {self.best_epoch + 1})")


class ModelCheckpoint(_Monitor):
    """Save the model after each epoch (or only when ``monitor`` improves, ``save_best_only=True``).

    ``filepath`` may contain ``{epoch}`` and log keys (``{val_loss:.3f}``). The file is written by
    ``model.save`` when the model has one (the Keras facade), else as safetensors weights.
    """

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch"):
        super().__init__(monitor, mode)
        self.filepath, self.verbose, self.save_best_only = str(filepath), verbose, save_best_only
        self.save_weights_only = save_weights_only

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = self._value(logs)
            if value is None or not self._improved(value):
                return
            self.best = value
        path = Path(self.filepath.format(epoch=epoch + 1, **logs))
        model = self.model
        if hasattr(model, "save") and not self.save_weights_only:
            model.save(path)
        else:
            from safetensors.torch import save as st_save

            from rnnlab.runs import atomic_write_bytes

            state = {k: v.detach().cpu().contiguous() for k, v in self.trainer.model.state_dict().items()}
            atomic_write_bytes(path, st_save(state))
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved model to {path}")


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` after ``patience`` epochs without improvement."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0):
        super().__init__(monitor, mode, min_delta)
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau factor must be < 1, got {factor}")
        self.factor, self.patience, self.verbose, self.cooldown, self.min_lr = factor, patience, verbose, cooldown, min_lr
        self.wait, self.cooldown_left = 0, 0

    def on_epoch_end(self, epoch, logs=None):
        value = self._value(logs)
        if value is None:
            return
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
        if self._improved(value):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience and self.cooldown_left == 0:
            for group in self.trainer.optimizer.param_groups:
                group["lr"] = max(group["lr"] * self.factor, self.min_lr)
            if self.verbose:
                print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {self.trainer.learning_rate:.3g}")
            self.cooldown_left, self.wait = self.cooldown, 0


class LearningRateScheduler(Callback):
    """Set the learning rate at each epoch start to ``schedule(epoch, lr)``."""

    def __init__(self, schedule, verbose=0):
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        lr = float(self.schedule(epoch, self.trainer.learning_rate))
        for group in self.trainer.optimizer.param_groups:
            group["lr"] = lr
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr:.3g}")


class CSVLogger(Callback):
    """Append one row per epoch (epoch + logs) to a CSV file."""

    def __init__(self, filename, separator=",", append=False):
        self.filename, self.sep, self.append = str(filename), separator, append
        self.keys = None

    def on_train_begin(self, logs=None):
        if not self.append and Path(self.filename).exists():
            Path(self.filename).unlink()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = Path(self.filename)
        new = not path.exists() or path.stat().st_size == 0
        if self.keys is None:
            self.keys = sorted(logs)
        with path.open("a", newline="") as handle:
            writer = csv.writer(handle, delimiter=self.sep)
            if new:
                writer.writerow(["epoch", *self.keys])
            writer.writerow([epoch, *(logs.get(k, "") for k in self.keys)])


class TerminateOnNaN(Callback):
    """Stop training as soon as a batch loss is NaN or infinite."""

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            print(f"Batch {batch}: invalid loss {loss}, terminating training")
            self.trainer.stop_training = True


class CosineDecay(Callback):
    """Cosine decay of the learning rate after every batch, from ``learning_rate`` to
    ``final_fraction`` of it over ``total_steps`` (Loshchilov & Hutter 2017, without restarts).

    For runs of a few epochs a per-batch decay beats a per-epoch one: the rate is small exactly at
    the end, whenever that is. The step is computed from (epoch, batch), so a resumed run continues
    on the same curve.
    """

    def __init__(self, learning_rate: float, total_steps: int, steps_per_epoch: int, final_fraction: float = 0.05):
        if total_steps < 1 or steps_per_epoch < 1:
            raise ValueError(f"CosineDecay needs total_steps and steps_per_epoch >= 1, got {total_steps}, {steps_per_epoch}")
        self.base, self.total, self.per_epoch, self.final = learning_rate, total_steps, steps_per_epoch, final_fraction
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        progress = min(1.0, (self.epoch * self.per_epoch + batch + 1) / self.total)
        lr = self.base * (self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in self.trainer.optimizer.param_groups:
            group["lr"] = lr


class TimeLimit(Callback):
    """Stop training once ``minutes`` of training have passed (checked after every batch).

    The epoch in progress ends early; the trainer still validates it and writes its checkpoint, so
    a time budget never costs the work done. ``stopped_early`` says whether the limit was hit and
    ``batches`` counts the batches trained (for throughput figures).
    """

    def __init__(self, minutes: float):
        if not minutes > 0:
            raise ValueError(f"TimeLimit needs minutes > 0, got {minutes!r}")
        self.seconds = 60.0 * minutes
        self.stopped_early = False

    def on_train_begin(self, logs=None):
        import time

        self._start = time.monotonic()
        self.batches = 0

    def on_batch_end(self, batch, logs=None):
        import time

        self.batches += 1
        if time.monotonic() - self._start > self.seconds:
            self.stopped_early = True
            self.trainer.stop_training = True


def tensorboard_available() -> bool:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (needs the tensorboard package)
    except ImportError:
        return False
    return True


class TensorBoard(Callback):
    """Write every epoch's logs (loss, metrics, lr) as TensorBoard scalars under ``log_dir``.

    Needs the ``tensorboard`` package; view with ``tensorboard --logdir DIR``.
    """

    def __init__(self, log_dir="logs", **kwargs):
        self.log_dir = str(log_dir)
        self.writer = None

    def on_train_begin(self, logs=None):
        from torch.utils.tensorboard import SummaryWriter

        if getattr(self.trainer, "is_main", True):
            self.writer = SummaryWriter(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        if self.writer is None:
            return
        for k, v in (logs or {}).items():
            if isinstance(v, (int, float)) and np.isfinite(v):
                self.writer.add_scalar(k, v, epoch + 1)
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class History(Callback):
    """``history.history``: a dict of per-epoch lists; ``history.epoch``: the epoch numbers."""

    def __init__(self):
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)
