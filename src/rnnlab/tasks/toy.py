"""A toy sequence task for every cell: remember the first value of a noisy sequence.

``y = x_0`` after ``steps`` noisy steps: a memory task that shows in a minute which cells carry
information across time (LSTM/GRU) and which forget it (plain RNN). Used by ``make demo`` (one
short training per cell), by the tests, and as the small task of ``rnnlab tune`` and
``rnnlab lr-find``.

Task protocol (shared by every application module, used by ``rnnlab tune`` / ``lr-find``):
``Config`` (a dataclass), ``build(config) -> (trainer, train_data, val_data)`` and
``objective(config, callbacks=()) -> validation loss``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass

import torch
from torch import nn

import rnnlab
from rnnlab.errors import RnnlabError
from rnnlab.runs import new_run_dir, print_table, write_config, write_metrics
from rnnlab.train import Trainer, seed_everything

CELLS = {"rnn": rnnlab.RNN, "lstm": rnnlab.LSTM, "gru": rnnlab.GRU, "ctrnn": rnnlab.CTRNN}


@dataclass
class Config:
    cell: str = "lstm"
    hidden: int = 32
    steps: int = 20
    samples: int = 2048
    noise: float = 0.3
    epochs: int = 8
    batch_size: int = 64
    learning_rate: float = 3e-3
    optimizer: str = "adam"
    clipnorm: float | None = 1.0
    seed: int = 0


class Remember(nn.Module):
    """Cell over the sequence, linear read-out of the last state."""

    def __init__(self, cell: str, hidden: int):
        super().__init__()
        if cell not in CELLS:
            raise RnnlabError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        kwargs = {"dt": 20.0, "tau": 100.0, "activation": "tanh"} if cell == "ctrnn" else {}
        self.rnn = CELLS[cell](1, hidden, **kwargs)
        self.head = nn.Linear(hidden, 1)
        if cell == "lstm":
            # Forget-gate bias 1 (Gers et al. 2000; Keras' unit_forget_bias): the cell starts out
            # remembering, so the gradient reaches step 0 instead of sitting on a plateau.
            with torch.no_grad():
                self.rnn.bias_ih_l0[hidden:2 * hidden] = 1.0

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def make_data(config: Config, seed_offset: int = 0):
    g = torch.Generator().manual_seed(config.seed * 1000 + seed_offset)
    first = torch.randn(config.samples, 1, 1, generator=g)
    rest = config.noise * torch.randn(config.samples, config.steps - 1, 1, generator=g)
    return torch.cat([first, rest], 1), first[:, 0]


def build(config: Config, callbacks=(), run_dir=None):
    """``(trainer, (x, y), (x_val, y_val))`` for this config."""
    if config.steps < 2:
        raise RnnlabError(f"steps must be >= 2, got {config.steps}")
    seed_everything(config.seed)
    model = Remember(config.cell, config.hidden)
    trainer = Trainer(model, "mse", optimizer=config.optimizer, learning_rate=config.learning_rate,
                      clipnorm=config.clipnorm, callbacks=callbacks, seed=config.seed, run_dir=run_dir,
                      config=dataclasses.asdict(config))
    return trainer, make_data(config), make_data(dataclasses.replace(config, samples=512), seed_offset=1)


def objective(config: Config, callbacks=()) -> float:
    """Train and return the final validation loss (the quantity ``rnnlab tune`` minimises)."""
    trainer, train, val = build(config, callbacks)
    history = trainer.fit(*train, epochs=config.epochs, batch_size=config.batch_size, validation_data=val, verbose=0)
    return float(history.history["val_loss"][-1])


def run(config: Config, run_dir=None, verbose: int = 0, resume: bool = False) -> dict:
    start = time.perf_counter()
    trainer, train, val = build(config, run_dir=run_dir)
    history = trainer.fit(*train, epochs=config.epochs, batch_size=config.batch_size, validation_data=val,
                          verbose=verbose, resume=resume)
    return {"cell": config.cell, "final_loss": history.history["loss"][-1],
            "val_loss": history.history["val_loss"][-1], "train_s": time.perf_counter() - start}


def demo(run_dir) -> dict:
    """One short training per cell; the table shows which cells remember across 20 noisy steps."""
    rows = []
    for cell in CELLS:
        config = Config(cell=cell)
        rows.append(run(config, run_dir=run_dir / cell))
        write_config(run_dir / cell, config)
        write_metrics(run_dir / cell, {k: v for k, v in rows[-1].items() if k != "cell"})
    print_table(rows, ["cell", "final_loss", "val_loss", "train_s"])
    metrics = {r["cell"]: {"final_loss": r["final_loss"], "val_loss": r["val_loss"]} for r in rows}
    write_metrics(run_dir, metrics)
    return metrics


def explain_inputs(checkpoint, input_spec: str | None) -> dict:
    """For ``rnnlab explain toy``: the trained model and one sequence (``seed:N``, default seed:0)."""
    from rnnlab.train.checkpoint import load_checkpoint, load_model_weights

    state = load_checkpoint(checkpoint)
    config = Config(**{k: v for k, v in (state.get("config") or {}).items() if k in {f.name for f in dataclasses.fields(Config)}})
    model = Remember(config.cell, config.hidden)
    load_model_weights(model, state["model"], checkpoint)
    seed = 0
    if input_spec:
        if not input_spec.startswith("seed:") or not input_spec[5:].isdigit():
            raise RnnlabError(f"toy --input must be seed:N (which generated sequence), got {input_spec!r}")
        seed = int(input_spec[5:])
    x, _ = make_data(dataclasses.replace(config, samples=1, seed=seed), seed_offset=7)
    return {"model": model, "x": x, "baseline": "zeros", "inputs": x[..., 0],
            "title": f"toy {config.cell}: which steps drive the recalled first value"}


def register(subparsers) -> None:
    p = subparsers.add_parser("toy", help="train one cell on the remember-the-first-value toy task",
                              description=__doc__.split("\n\n")[0], epilog="Example: rnnlab toy --cell gru --steps 50 --json")
    from rnnlab.cli import add_config_arguments, add_run_arguments

    add_config_arguments(p, Config)
    add_run_arguments(p)
    p.set_defaults(func=_main)


def _main(args) -> int:
    from rnnlab.cli import config_from_args

    config = config_from_args(Config, args)
    if args.dry_run:
        config = dataclasses.replace(config, samples=128, epochs=1)
    run_dir = new_run_dir("toy", args.run_dir)
    write_config(run_dir, config)
    metrics = run(config, run_dir, verbose=0 if args.json else 1, resume=args.resume)
    write_metrics(run_dir, metrics)
    if args.json:
        print(json.dumps(metrics))
    else:
        print_table([metrics])
        print(f"run folder: {run_dir}")
    return 0
