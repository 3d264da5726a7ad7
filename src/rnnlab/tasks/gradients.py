"""``rnnlab gradients``: plot how the gradient travels back through time in each cell.

Left: ``||dL/dh_t||`` on a long-memory task (report the first value of a noisy sequence at its
last step) for SimpleRNN, LSTM (forget-gate bias 1) and GRU at initialisation: the gradient
reaching early steps shrinks geometrically in every cell, by orders of magnitude less in the LSTM,
whose additive cell path ``c_t = f_t c_{t-1} + i_t g_t`` multiplies it by ``f_t`` only. Middle: a plain RNN whose recurrent matrix has gain 2
(spectral radius > 1): the gradient explodes backwards in time. Right: training that exploding
RNN with SGD with and without gradient clipping (``clipnorm=1``): unclipped, the loss overflows.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from torch import nn

import rnnlab
from rnnlab.gradflow import gradient_norms_over_time
from rnnlab.runs import new_run_dir, save_figure, write_metrics
from rnnlab.train import Callback, Trainer, seed_everything


def memory_batch(batch: int, steps: int, seed: int = 0):
    """The first value must be reported at the last step; the rest is noise."""
    g = torch.Generator().manual_seed(seed)
    x = 0.5 * torch.randn(batch, steps, 1, generator=g)
    return x, x[:, 0].clone()


def _last_step_loss(head: nn.Module, target: torch.Tensor):
    # the loss reads only h_T, so every dL/dh_t for t < T arrives through the recurrence
    return lambda states: (head(states[-1]) - target).pow(2).mean()


CELL_NAMES = {"SimpleRNN": "rnn", "LSTM": "lstm", "GRU": "gru"}


def profile(cell: str, steps: int, seed: int, gain: float | None = None) -> torch.Tensor:
    """``||dL/dh_t||`` at initialisation for one cell (hidden 32) on the memory task (the toy task's model)."""
    from rnnlab.tasks import toy

    seed_everything(seed)
    model = toy.Remember(CELL_NAMES[cell], toy.Config.hidden)
    if gain is not None:
        with torch.no_grad():
            nn.init.orthogonal_(model.rnn.weight_hh_l0, gain=gain)
    x, y = memory_batch(64, steps, seed + 1)
    return gradient_norms_over_time(model.rnn, x, _last_step_loss(model.head, y))


class _BatchLosses(Callback):
    def __init__(self):
        self.losses = []

    def on_batch_end(self, batch, logs=None):
        self.losses.append((logs or {}).get("loss", math.nan))


class _ExplodingRNN(nn.Module):
    def __init__(self, gain: float):
        super().__init__()
        self.rnn = rnnlab.RNN(1, 64)
        with torch.no_grad():
            nn.init.orthogonal_(self.rnn.weight_hh_l0, gain=gain)
        self.head = nn.Linear(64, 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def train_exploding(clipnorm: float | None, steps: int, seed: int, gain: float = 2.0) -> list[float]:
    seed_everything(seed)
    x, y = memory_batch(512, steps, seed)
    recorder = _BatchLosses()
    trainer = Trainer(_ExplodingRNN(gain), "mse", optimizer="sgd", learning_rate=0.1, clipnorm=clipnorm,
                      callbacks=[recorder], on_nan="skip", seed=seed)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(x, y, epochs=3, batch_size=32, verbose=0)
    return recorder.losses


def run(out: Path, steps: int = 50, seed: int = 0) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profiles = {cell: profile(cell, steps, seed) for cell in CELL_NAMES}
    exploding = profile("SimpleRNN", steps, seed, gain=2.0)
    losses = {"no clipping": train_exploding(None, 30, seed), "clipnorm=1": train_exploding(1.0, 30, seed)}

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    t = range(steps)
    for cell, norms in profiles.items():
        axes[0].semilogy(t, norms.clamp_min(1e-30), label=cell)
    axes[0].set(title=f"Vanishing: ||dL/dh_t||, loss at step {steps}", xlabel="time step t", ylabel="gradient norm (log)")
    axes[0].legend()
    axes[1].semilogy(t, exploding.clamp_min(1e-30), color="crimson", label="SimpleRNN, W_hh gain 2")
    axes[1].set(title="Exploding: ||dL/dh_t||", xlabel="time step t")
    axes[1].legend()
    for name, curve in losses.items():
        axes[2].semilogy([v if math.isfinite(v) and v > 0 else float("nan") for v in curve], label=name)
    axes[2].set(title="Training the exploding RNN (SGD lr 0.1, 30 steps)", xlabel="batch (missing = inf/NaN)",
                ylabel="loss (log)")
    axes[2].legend()
    fig.tight_layout()
    save_figure(fig, out)

    def ratio(norms):  # how much of the last-step gradient reaches step 0
        return float(norms[0] / norms[-1])

    finite = {k: [v for v in c if math.isfinite(v)] for k, c in losses.items()}
    return {
        "grad_ratio_first_to_last": {cell: ratio(n) for cell, n in profiles.items()},
        "exploding_ratio_first_to_last": ratio(exploding),
        "final_loss": {k: (c[-1] if c else None) for k, c in finite.items()},
        "nonfinite_batches": {k: sum(not math.isfinite(v) for v in c) for k, c in losses.items()},
        "plot": str(out),
    }


def register(subparsers) -> None:
    p = subparsers.add_parser("gradients", help="plot vanishing/exploding gradients through time (PNG)",
                              description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--out", default=None, help="PNG path (default <run-dir>/gradients.png)")
    p.add_argument("--steps", type=int, default=50, help="sequence length (default 50)")
    p.add_argument("--run-dir", default=None, help="run folder (default runs/gradients/<timestamp>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=_main)


def _main(args) -> int:
    run_dir = new_run_dir("gradients", args.run_dir)
    out = Path(args.out) if args.out else run_dir / "gradients.png"
    metrics = run(out, args.steps, args.seed)
    write_metrics(run_dir, metrics)
    if args.json:
        print(json.dumps(metrics))
    else:
        for cell, r in metrics["grad_ratio_first_to_last"].items():
            print(f"{cell:10s} ||dL/dh_0|| / ||dL/dh_T|| = {r:.3g}")
        print(f"exploding SimpleRNN ratio = {metrics['exploding_ratio_first_to_last']:.3g}")
        print(f"plot: {out}")
    return 0


def demo(run_dir: Path) -> dict:
    metrics = run(run_dir / "gradients.png")
    write_metrics(run_dir, metrics)
    return metrics
