"""Decoding hand velocity from motor-cortex spike counts: RNN decoders against the classical ones.

* Wiener filter (ridge regression on the last ``lags`` bins of every unit; Carmena et al. 2003),
* Kalman filter (velocity state, linear-Gaussian observation of the population; Wu et al. 2006),
* LSTM / GRU decoders (rnnlab.LSTM / rnnlab.GRU over the last ``window`` bins, trained with
  :class:`rnnlab.train.Trainer`; Glaser et al. 2020).

All are fit on the train split and scored by R2 (:func:`rnnlab.metrics.motor.r2_score`) on the test
split. Features are square-root spike counts (variance-stabilised) z-scored with train statistics;
history never crosses the start of a reach (bins before it are zero = the train mean).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

import rnnlab
from rnnlab.brain.recordings import Recording, Split
from rnnlab.errors import RnnlabError
from rnnlab.metrics.motor import r2_score


@dataclass
class DecodeConfig:
    lags: int = 3              # Wiener history (bins, current included); 3-5 in the README's baseline
    window: int = 10           # RNN history (bins)
    hidden: int = 64
    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 3e-3
    dropout: float = 0.3
    weight_decay: float = 1e-4
    val_fraction: float = 0.2  # last reaches of the train split, to pick ridge strength / early stop
    seed: int = 0


class Standardizer:
    """sqrt counts, then z-score with the train mean/std (units silent in train get std 1)."""

    def __init__(self, spikes: np.ndarray):
        root = np.sqrt(np.clip(spikes, 0, None))
        self.mean, self.std = root.mean(0), root.std(0)
        self.std[self.std == 0] = 1.0

    def __call__(self, spikes: np.ndarray) -> np.ndarray:
        if spikes.shape[1] != self.mean.shape[0]:
            raise RnnlabError(f"expected {self.mean.shape[0]} units (as in train), got {spikes.shape[1]}")
        return (np.sqrt(np.clip(spikes, 0, None)) - self.mean) / self.std


def history(z: np.ndarray, segments, length: int) -> np.ndarray:
    """``(bins, length, units)``: for bin ``t`` the bins ``t-length+1 .. t`` of its own reach, zero-padded."""
    if length < 1:
        raise RnnlabError(f"history length must be >= 1, got {length}")
    out = np.zeros((z.shape[0], length, z.shape[1]), dtype=np.float32)
    for start, stop in segments:
        for t in range(start, stop):
            lo = max(start, t - length + 1)
            out[t, length - (t - lo + 1):] = z[lo:t + 1]
    return out


def split_reaches(segments, fraction: float):
    """Train/validation index arrays: the last ``fraction`` of reaches are validation."""
    n_val = max(1, int(round(fraction * len(segments))))
    fit = np.concatenate([np.arange(a, b) for a, b in segments[:-n_val]])
    val = np.concatenate([np.arange(a, b) for a, b in segments[-n_val:]])
    return fit, val


class WienerFilter:
    """Ridge regression ``v_t = W [z_t, z_{t-1}, ..., z_{t-lags+1}, 1]``."""

    def __init__(self, alpha: float = 1.0):
        self.alpha = float(alpha)

    def fit(self, features: np.ndarray, velocity: np.ndarray) -> "WienerFilter":
        x = features.reshape(len(features), -1)
        self.x_mean, self.y_mean = x.mean(0), velocity.mean(0)
        xc, yc = x - self.x_mean, velocity - self.y_mean
        gram = xc.T @ xc + self.alpha * np.eye(xc.shape[1])
        self.weight = np.linalg.solve(gram, xc.T @ yc)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        return (features.reshape(len(features), -1) - self.x_mean) @ self.weight + self.y_mean


def fit_wiener(feats: np.ndarray, velocity: np.ndarray, fit_idx, val_idx,
               alphas=(1.0, 10.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)) -> WienerFilter:
    """Pick the ridge strength on the validation reaches, then refit on the whole train split."""
    scores = [r2_score(velocity[val_idx], WienerFilter(a).fit(feats[fit_idx], velocity[fit_idx]).predict(feats[val_idx]))
              for a in alphas]
    return WienerFilter(alphas[int(np.argmax(scores))]).fit(feats, velocity)


class KalmanFilter:
    """Velocity Kalman filter: ``v_t = A v_{t-1} + w`` (cov W), ``z_t = H v_t + c + q`` (cov Q).

    A, W, H, Q are least-squares fits on the train reaches (Wu et al. 2006); the filter restarts at
    the start of every reach from the train mean velocity with its covariance.
    """

    def fit(self, z: np.ndarray, velocity: np.ndarray, segments) -> "KalmanFilter":
        self.v_mean = velocity.mean(0)
        v = velocity - self.v_mean
        prev = np.concatenate([np.arange(a, b - 1) for a, b in segments])
        nxt = prev + 1
        self.A = np.linalg.lstsq(v[prev], v[nxt], rcond=None)[0].T
        resid = v[nxt] - v[prev] @ self.A.T
        self.W = resid.T @ resid / len(prev)
        design = np.hstack([v, np.ones((len(v), 1))])
        coef = np.linalg.lstsq(design, z, rcond=None)[0]
        self.H, self.c = coef[:2].T, coef[2]
        obs_resid = z - design @ coef
        # A small ridge keeps Q invertible when a unit is nearly silent.
        self.Q = obs_resid.T @ obs_resid / len(z) + 1e-3 * np.eye(z.shape[1])
        self.P0 = np.cov(v.T)
        return self

    def predict(self, z: np.ndarray, segments) -> np.ndarray:
        out = np.zeros((len(z), 2))
        eye = np.eye(2)
        for start, stop in segments:
            x, P = np.zeros(2), self.P0.copy()
            for t in range(start, stop):
                if t > start:
                    x = self.A @ x
                    P = self.A @ P @ self.A.T + self.W
                S = self.H @ P @ self.H.T + self.Q
                K = np.linalg.solve(S, self.H @ P).T  # P H^T S^-1 (S symmetric)
                x = x + K @ (z[t] - self.H @ x - self.c)
                P = (eye - K @ self.H) @ P
                out[t] = x
        return out + self.v_mean


class RNNDecoder(nn.Module):
    """rnnlab.LSTM / rnnlab.GRU over the spike history window, linear read-out of the last step."""

    def __init__(self, cell: str, units: int, hidden: int, dropout: float):
        super().__init__()
        layers = {"lstm": rnnlab.LSTM, "gru": rnnlab.GRU}
        if cell not in layers:
            raise RnnlabError(f"decoder cell must be one of {sorted(layers)}, got {cell!r}")
        self.input_dropout = nn.Dropout(dropout)  # spike counts of 1200 bins: the decoder overfits without it
        self.rnn = layers[cell](units, hidden)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, 2))

    def forward(self, x):
        out, _ = self.rnn(self.input_dropout(x))
        return self.head(out[:, -1])


def fit_rnn(cell: str, x: np.ndarray, y: np.ndarray, fit_idx, val_idx, config: DecodeConfig):
    """Train on the fit reaches, keep the weights of the best validation epoch, then return the model."""
    from rnnlab.train import Trainer, seed_everything
    from rnnlab.train.callbacks import Callback

    seed_everything(config.seed)
    model = RNNDecoder(cell, x.shape[-1], config.hidden, config.dropout)
    y_scale = y[fit_idx].std(0)  # train on unit-variance velocity so the loss is well scaled
    xt, yt = torch.as_tensor(x), torch.as_tensor(y / y_scale, dtype=torch.float32)

    class KeepBest(Callback):
        best, state = float("inf"), None

        def on_epoch_end(self, epoch, logs):
            if logs["val_loss"] < self.best:
                self.best = logs["val_loss"]
                self.state = {k: v.clone() for k, v in model.state_dict().items()}

    keep = KeepBest()
    trainer = Trainer(model, "mse", learning_rate=config.learning_rate, weight_decay=config.weight_decay,
                      optimizer="adamw", clipnorm=1.0, callbacks=[keep], seed=config.seed)
    trainer.fit(xt[fit_idx], yt[fit_idx], epochs=config.epochs, batch_size=config.batch_size,
                validation_data=(xt[val_idx], yt[val_idx]), verbose=0)
    model.load_state_dict(keep.state)
    model.eval()

    def predict(features: np.ndarray) -> np.ndarray:
        return trainer.predict(torch.as_tensor(features), batch_size=512).numpy() * y_scale

    return predict


def decode(recording: Recording, config: DecodeConfig = DecodeConfig(), cells=("lstm", "gru")) -> dict:
    """Fit every decoder on the train split and score R2 on the test split.

    Returns ``{"r2": {name: R2}, "predictions": {name: (bins, 2)}, "velocity": (bins, 2)}``.
    """
    train, test = recording.train, recording.test
    scale = Standardizer(train.spikes)
    z_tr, z_te = scale(train.spikes), scale(test.spikes)
    fit_idx, val_idx = split_reaches(train.segments, config.val_fraction)
    preds = {}
    lag_tr, lag_te = history(z_tr, train.segments, config.lags), history(z_te, test.segments, config.lags)
    preds["wiener"] = fit_wiener(lag_tr, train.velocity, fit_idx, val_idx).predict(lag_te)
    preds["kalman"] = KalmanFilter().fit(z_tr, train.velocity, train.segments).predict(z_te, test.segments)
    win_tr, win_te = history(z_tr, train.segments, config.window), history(z_te, test.segments, config.window)
    for cell in cells:
        preds[cell] = fit_rnn(cell, win_tr, train.velocity, fit_idx, val_idx, config)(win_te)
    r2 = {name: r2_score(test.velocity, p) for name, p in preds.items()}
    return {"r2": r2, "predictions": preds, "velocity": test.velocity}


def plot_decoding(result: dict, path, bins: int = 200):
    """Test-split hand velocity (x) and each decoder's estimate over the first ``bins`` bins."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rnnlab.runs import save_figure

    fig, axes = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    for d, ax in enumerate(axes):
        ax.plot(result["velocity"][:bins, d], "k", lw=2, label="recorded")
        for name, p in result["predictions"].items():
            ax.plot(p[:bins, d], lw=1, label=f"{name} (R2 {result['r2'][name]:.2f})")
        ax.set_ylabel(f"hand velocity {'xy'[d]}")
    axes[0].legend(fontsize=7, ncol=5, loc="upper right")
    axes[1].set_xlabel("test bin")
    axes[0].set_title("Decoding hand velocity from motor cortex, subject C (Dyer et al. 2017)")
    return save_figure(fig, path)
