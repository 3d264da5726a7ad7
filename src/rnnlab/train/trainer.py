"""The one training loop of rnnlab: ``Trainer.fit / evaluate / predict``.

Every model in the project trains here: the Keras facade, the applications, users' own
``nn.Module``s. One step is::

    pred = model(*inputs); loss = loss_fn(pred, target)     # forward through time
    loss.backward()                                         # backpropagation through time
    clip (clipvalue, clipnorm); optimizer.step()            # exploding gradients tamed

Stateful models (truncated BPTT with the state carried across consecutive batches) expose
``reset_states()``, called at the start of every epoch, and detach their carried state themselves.
With ``run_dir`` the trainer writes safetensors checkpoints (last K, best, and one every few
minutes inside long epochs); ``fit(resume=True)`` continues from the newest one and ends with the
same weights as an uninterrupted run. Under ``torchrun`` the model is wrapped in
DistributedDataParallel, each rank takes its share of every global batch, metrics are reduced
across ranks, and only rank 0 prints and writes.
"""
from __future__ import annotations

import math
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from rnnlab.errors import RnnlabError
from rnnlab.runs import write_json
from rnnlab.train import distributed as dist_utils
from rnnlab.train.callbacks import Callback, History, TensorBoard, tensorboard_available
from rnnlab.train.checkpoint import (CheckpointError, load_checkpoint, load_model_weights, rng_state,
                                     save_checkpoint, set_rng_state)
from rnnlab.train.data import ArrayData, make_data
from rnnlab.train.losses import get_loss
from rnnlab.train.metrics import get_metric
from rnnlab.train.optim import make_optimizer, make_schedule


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and torch: the same seed gives the same numbers on one machine."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_device(value, device):
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (tuple, list)):
        return type(value)(_to_device(v, device) for v in value)
    return value


class Trainer:
    """Train any ``nn.Module`` with a loss, an optimizer, metrics and callbacks.

    Args:
        model: the network; ``model(*inputs)`` returns the prediction.
        loss: a name from :data:`rnnlab.train.losses.LOSSES` or ``fn(pred, target) -> scalar``.
        optimizer: ``"adam"``, ``"sgd"``, ``"rmsprop"``, ``"adamw"`` or a torch optimizer.
        learning_rate, clipnorm, clipvalue, weight_decay: as in Keras / torch.
        metrics: names (``"accuracy"``, ``"mae"``, ...) or callables ``fn(pred, target)``.
        schedule: per-epoch LR schedule (``"step"``, ``"exponential"``, ``"cosine"``, ``"plateau"``);
            ``schedule_kwargs`` passes its parameters.
        callbacks: :class:`rnnlab.train.callbacks.Callback` objects.
        seed: seeds the run at ``fit`` and the per-epoch shuffling.
        run_dir: where checkpoints (``checkpoints/``) and ``log.csv`` go; None writes nothing.
        on_nan: ``"raise"`` (stop naming the batch) or ``"skip"`` (warn and skip the step).
        keep_last: how many epoch checkpoints to keep besides ``best`` and ``last``.
        best_monitor: the logged figure that picks ``best`` (``"val_loss"``; a name with "acc" in it
            is maximised); without it in the logs, the validation loss, else the training loss.
        checkpoint_every_s: also checkpoint inside an epoch after this many seconds.
        config: JSON-able description stored in every checkpoint.
    """

    def __init__(
        self,
        model: nn.Module,
        loss="mse",
        optimizer="adam",
        learning_rate: float = 1e-3,
        metrics: Sequence = (),
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        schedule=None,
        schedule_kwargs: dict | None = None,
        callbacks: Sequence[Callback] = (),
        seed: int | None = 0,
        device: str | torch.device | None = None,
        run_dir: str | Path | None = None,
        on_nan: str = "raise",
        weight_decay: float = 0.0,
        optimizer_kwargs: dict | None = None,
        keep_last: int = 3,
        checkpoint_every_s: float = 300.0,
        config: dict | None = None,
        best_monitor: str = "val_loss",
    ):
        if not isinstance(model, nn.Module):
            raise RnnlabError(f"Trainer needs a torch.nn.Module, got {type(model).__name__}")
        if on_nan not in ("raise", "skip"):
            raise RnnlabError(f"on_nan must be 'raise' or 'skip', got {on_nan!r}")
        for arg, value in (("clipnorm", clipnorm), ("clipvalue", clipvalue)):
            if value is not None and not value > 0:
                raise RnnlabError(f"{arg} must be a positive number or None, got {value!r}")
        self.device = torch.device(device) if device is not None else next(
            (p.device for p in model.parameters()), torch.device("cpu"))
        self.model = model.to(self.device)
        self.keras_model = None  # set by rnnlab.keras so callbacks can call model.save()
        self.loss_name, self.loss_fn = get_loss(loss)
        self.metrics = [get_metric(m, self.loss_name) for m in metrics]
        self.optimizer = make_optimizer(optimizer, model.parameters(), learning_rate, weight_decay,
                                        **(optimizer_kwargs or {}))
        self._schedule_spec, self._schedule_kwargs = schedule, dict(schedule_kwargs or {})
        self.scheduler = None
        self.clipnorm, self.clipvalue = clipnorm, clipvalue
        self.callbacks = list(callbacks)
        self.seed, self.on_nan = seed, on_nan
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.keep_last, self.checkpoint_every_s = keep_last, checkpoint_every_s
        self.best_monitor = best_monitor
        self.config = config or {}
        self.stop_training = False
        self.history = History()
        self.rank, self.world = dist_utils.rank_and_world()
        self._train_module = dist_utils.wrap(self.model) if self.world > 1 else self.model
        self._best = math.inf

    # -- properties ------------------------------------------------------------------------

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- the loop --------------------------------------------------------------------------

    def fit(self, x, y=None, epochs: int = 1, batch_size: int = 32, validation_data=None,
            validation_split: float = 0.0, shuffle: bool = True, verbose: int = 1, initial_epoch: int = 0,
            resume: bool = False) -> History:
        """Train for ``epochs`` epochs; returns the :class:`History` (``history.history`` dict)."""
        if not isinstance(epochs, int) or epochs < 0:
            raise RnnlabError(f"epochs must be a non-negative int, got {epochs!r}")
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise RnnlabError(f"batch_size must be a positive int, got {batch_size!r}")
        train = make_data(x, y, "x")
        if validation_split:
            if not isinstance(train, ArrayData):
                raise RnnlabError("validation_split needs array inputs; pass validation_data for a DataLoader")
            train, val = train.split(validation_split)
        else:
            val = None if validation_data is None else self._validation(validation_data)
        if self.scheduler is None:
            self.scheduler = make_schedule(self._schedule_spec, self.optimizer, epochs, **self._schedule_kwargs)
        start_epoch, start_batch, partial = initial_epoch, 0, None
        if resume:
            start_epoch, start_batch, partial = self._resume()
        elif self.seed is not None:
            seed_everything(self.seed)
        self.stop_training = False
        callbacks = [self.history, *self.callbacks]
        if self.run_dir is not None and tensorboard_available() and not any(isinstance(c, TensorBoard) for c in callbacks):
            callbacks.append(TensorBoard(self.run_dir / "tensorboard"))  # event files beside log.csv
        for cb in callbacks:
            cb.set_trainer(self)
            cb.on_train_begin()
        for epoch in range(start_epoch, epochs):
            logs = self._train_epoch(train, epoch, epochs, batch_size, shuffle, verbose, callbacks,
                                     start_batch if epoch == start_epoch else 0,
                                     partial if epoch == start_epoch else None)
            if val is not None:
                logs.update({f"val_{k}": v for k, v in self.evaluate(val, batch_size=batch_size).items()})
            self._step_schedule(logs)
            logs["lr"] = self.learning_rate
            if verbose == 2 and self.is_main:
                print(f"Epoch {epoch + 1}/{epochs} - " + " - ".join(f"{k}: {v:.4g}" for k, v in logs.items()))
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            self._save_epoch(epoch, logs)
            if self.stop_training:
                break
        for cb in callbacks:
            cb.on_train_end()
        return self.history

    def _validation(self, validation_data):
        if isinstance(validation_data, (tuple, list)) and len(validation_data) == 2 and not hasattr(validation_data, "dataset"):
            return make_data(validation_data[0], validation_data[1], "validation_data x")
        return make_data(validation_data, None, "validation_data")

    def _train_epoch(self, train, epoch, epochs, batch_size, shuffle, verbose, callbacks, start_batch, partial):
        from tqdm.auto import tqdm

        self.model.train()
        if hasattr(self.model, "reset_states"):
            self.model.reset_states()
        for cb in callbacks:
            cb.on_epoch_begin(epoch)
        sums = dict(partial["sums"]) if partial else {}
        total = train.num_batches(batch_size)
        bar = tqdm(total=total, initial=start_batch, desc=f"Epoch {epoch + 1}/{epochs}", leave=True,
                   disable=(verbose != 1 or not self.is_main), file=sys.stderr, dynamic_ncols=True)
        last_save = time.monotonic()
        batch_index = start_batch
        attempted = 0
        for inputs, target, share in train.batches(batch_size, shuffle, self.seed or 0, epoch, start_batch,
                                                    self.rank, self.world):
            attempted += 1
            step_logs = self._train_step(inputs, target, share, epoch, batch_index, callbacks)
            if self.stop_training:
                break
            if step_logs is not None:
                for k, v in step_logs.items():
                    sums[k] = sums.get(k, 0.0) + v
                bar.set_postfix({k: f"{v / max(sums['_n'], 1e-12):.4g}" for k, v in sums.items() if k != "_n"}, refresh=False)
                for cb in callbacks:
                    cb.on_batch_end(batch_index, {k: v / max(step_logs["_n"], 1e-12) for k, v in step_logs.items() if k != "_n"})
            bar.update(1)
            batch_index += 1
            if self.stop_training:
                break
            if self.run_dir is not None and time.monotonic() - last_save > self.checkpoint_every_s:
                self._save("last", epoch=epoch, batch=batch_index, sums=sums)
                last_save = time.monotonic()
        bar.close()
        sums = dist_utils.all_reduce_sums(sums) if self.world > 1 else sums
        n = sums.pop("_n", 0.0)
        if n == 0:
            if attempted:  # every batch was non-finite (skipped, or stopped by a callback)
                return {"loss": float("nan")}
            raise RnnlabError("the training data yielded no batches in this epoch")
        return {k: v / n for k, v in sums.items()}

    def _forward(self, module, inputs):
        return module(*inputs)

    def _train_step(self, inputs, target, share, epoch, batch_index, callbacks=()) -> dict | None:
        inputs, target = _to_device(inputs, self.device), _to_device(target, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        pred = self._forward(self._train_module, inputs)
        loss = self.loss_fn(pred, target)
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            raise RnnlabError(f"the loss must return a scalar tensor, got {type(loss).__name__} "
                              f"{tuple(loss.shape) if isinstance(loss, Tensor) else ''}")
        # Under DDP the check is on the global batch loss (one scalar all-reduce), so every rank skips
        # or stops on the same step instead of one leaving its peers waiting in backward's all-reduce.
        checked = dist_utils.global_mean(loss, share) if self.world > 1 else loss
        if not torch.isfinite(checked):
            for cb in callbacks:  # TerminateOnNaN may stop the run cleanly first
                cb.on_batch_end(batch_index, {"loss": checked.item()})
            if self.stop_training:
                return None
            message = f"loss is {checked.item()} at epoch {epoch + 1}, batch {batch_index}"
            if self.on_nan == "raise":
                raise RnnlabError(message + " (check the data and learning rate; on_nan='skip' skips such batches)")
            warnings.warn(message + "; batch skipped", stacklevel=2)
            return None
        # Each rank's loss is a mean over its share; scaling by world*share makes DDP's gradient
        # average equal the gradient of the mean over the whole global batch.
        (loss * (self.world * share) if self.world > 1 else loss).backward()
        if self.clipvalue is not None:
            nn.utils.clip_grad_value_(self.model.parameters(), self.clipvalue)
        if self.clipnorm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clipnorm)
        self.optimizer.step()
        n = float(_batch_len(inputs, target))
        logs = {"_n": n, "loss": loss.item() * n}
        if self.metrics and target is not None:
            with torch.no_grad():
                p = pred.detach()
                for name, fn in self.metrics:
                    logs[name] = float(fn(p, target)) * n
        return logs

    def _step_schedule(self, logs) -> None:
        if self.scheduler is None:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(logs.get("val_loss", logs.get("loss")))
        else:
            self.scheduler.step()

    # -- evaluate / predict ----------------------------------------------------------------

    @torch.no_grad()
    @torch.no_grad()
    def evaluate(self, x, y=None, batch_size: int = 32, verbose: int = 0) -> dict[str, float]:
        """Mean loss and metrics over the data (``{"loss": ..., "<metric>": ...}``)."""
        data = make_data(x, y, "x")
        self.model.eval()
        if hasattr(self.model, "reset_states"):
            self.model.reset_states()
        sums: dict[str, float] = {}
        for inputs, target, _ in data.batches(batch_size, False, 0, 0, 0, self.rank, self.world):
            inputs, target = _to_device(inputs, self.device), _to_device(target, self.device)
            pred = self._forward(self.model, inputs)
            n = float(_batch_len(inputs, target))
            sums["_n"] = sums.get("_n", 0.0) + n
            sums["loss"] = sums.get("loss", 0.0) + float(self.loss_fn(pred, target)) * n
            for name, fn in self.metrics:
                if target is not None:
                    sums[name] = sums.get(name, 0.0) + float(fn(pred, target)) * n
        if self.world > 1:
            sums = dist_utils.all_reduce_sums(sums)
        n = sums.pop("_n", 0.0)
        if n == 0:
            raise RnnlabError("evaluate got no samples")
        self.model.train()
        return {k: v / n for k, v in sums.items()}

    @torch.no_grad()
    def predict(self, x, batch_size: int = 32) -> Tensor:
        """Model outputs for every sample, concatenated along the batch axis (on the CPU)."""
        data = make_data(x, None, "x")
        self.model.eval()
        if hasattr(self.model, "reset_states"):
            self.model.reset_states()
        outs = [self._forward(self.model, _to_device(inputs, self.device)).detach().cpu()
                for inputs, _, _ in data.batches(batch_size, False, 0, 0)]
        self.model.train()
        if not outs:
            raise RnnlabError("predict got no samples")
        return torch.cat(outs)

    # -- checkpoints -----------------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "checkpoints"

    def state(self, epoch: int, batch: int = -1, sums: dict | None = None) -> dict[str, Any]:
        """Everything a resumed run needs (see :mod:`rnnlab.train.checkpoint`)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "epoch": epoch,
            "batch": batch,
            "sums": sums or {},
            "rng": rng_state(),
            "history": self.history.history,
            "history_epochs": self.history.epoch,
            "best": self._best if math.isfinite(self._best) else None,
            "config": self.config,
        }

    def _save(self, name: str, epoch: int, batch: int = -1, sums: dict | None = None) -> Path | None:
        if self.checkpoint_dir is None or not self.is_main:
            return None
        return save_checkpoint(self.checkpoint_dir / f"{name}.safetensors", self.state(epoch, batch, sums))

    def _best_score(self, logs: dict) -> float | None:
        """What ``best`` minimises: the monitored figure, negated when higher is better."""
        value = logs.get(self.best_monitor)
        if value is None:
            return logs.get("val_loss", logs.get("loss", math.inf))
        return -value if "acc" in self.best_monitor else value

    def _save_epoch(self, epoch: int, logs: dict) -> None:
        if self.run_dir is None or not self.is_main:
            return
        score = self._best_score(logs)
        improved = score is not None and score < self._best
        if improved:
            self._best = score
        self._save("last", epoch)
        if improved:
            self._save("best", epoch)
        if self.keep_last > 0:
            self._save(f"epoch-{epoch + 1:04d}", epoch)
            epochs = sorted(self.checkpoint_dir.glob("epoch-*.safetensors"))
            for old in epochs[:-self.keep_last]:
                old.unlink(missing_ok=True)
        self._append_log(epoch, logs)

    def _append_log(self, epoch: int, logs: dict) -> None:
        path = self.run_dir / "log.csv"
        keys = sorted(logs)
        new = not path.exists()
        with path.open("a") as handle:
            if new:
                handle.write(",".join(["epoch", *keys]) + "\n")
            handle.write(",".join([str(epoch + 1), *(f"{logs[k]:.6g}" for k in keys)]) + "\n")
        write_json(self.run_dir / "history.json", self.history.history)

    def _resume(self) -> tuple[int, int, dict | None]:
        """Load ``checkpoints/last.safetensors``; return (epoch to run, batch to start at, partial sums)."""
        if self.checkpoint_dir is None:
            raise RnnlabError("resume=True needs run_dir (the folder of the run to continue)")
        path = self.checkpoint_dir / "last.safetensors"
        if not path.exists():
            raise CheckpointError(f"nothing to resume: {path} does not exist")
        state = load_checkpoint(path)
        self.load_state(state, path)
        if state["batch"] is not None and state["batch"] >= 0:
            return int(state["epoch"]), int(state["batch"]), {"sums": state.get("sums") or {}}
        return int(state["epoch"]) + 1, 0, None

    def load_state(self, state: dict, path: str | Path = "<memory>") -> None:
        load_model_weights(self.model, state["model"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.history.history = {k: list(v) for k, v in (state.get("history") or {}).items()}
        self.history.epoch = list(state.get("history_epochs") or [])
        self._best = state["best"] if state.get("best") is not None else math.inf


def _batch_len(inputs, target) -> int:
    first = inputs[0] if isinstance(inputs, (tuple, list)) else inputs
    if isinstance(first, Tensor) and first.dim() > 0:
        return int(first.shape[0])
    if isinstance(target, Tensor) and target.dim() > 0:
        return int(target.shape[0])
    return 1
